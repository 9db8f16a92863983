//! immudb with server TLS: gRPC and the metrics port both speak TLS, and the hook verifies them
//! against the CA it is given.

mod common;

use common::*;
use immudb_double::TlsIdentity;
use immudb_hook::cli::{Cli, Command};
use immudb_hook::converge::Config;
use immudb_hook::reconcile::converge;
use immudb_hook::report::{Failure, Outcome};

/// A CA and a server certificate for `ip`, signed by it.
fn certificates(ip: std::net::IpAddr) -> (String, TlsIdentity) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip)];
    let server = params.signed_by(&server_key, &issuer).unwrap();
    let identity = TlsIdentity {
        cert_pem: server.pem(),
        key_pem: server_key.serialize_pem(),
    };
    (ca.pem(), identity)
}

/// The converge configuration of a primary-only cluster, trusting the CA in `ca_file` if any.
fn converge_trusting(cluster: &Cluster, ca_file: Option<&str>, timeout_s: u64) -> Config {
    let Cli {
        mut topology,
        command,
        ..
    } = cluster.converge_cli(&[], timeout_s, databases(&["appdb"]), &[]);
    let Command::Converge(args) = command else {
        unreachable!()
    };
    topology.tls_ca_file = ca_file.map(|name| cluster.path(name).into());
    args.config(&topology).expect("valid config")
}

#[tokio::test]
async fn the_hook_converges_a_tls_primary_it_trusts() {
    let cluster = Cluster::new();
    let (ca, identity) = certificates(cluster.ip(0));
    let mut options = cluster.options(0);
    options.tls = Some(identity);
    let primary = cluster.start(options).await;
    std::fs::write(cluster.path("ca.pem"), ca).unwrap();
    let report = converge(&converge_trusting(&cluster, Some("ca.pem"), 20)).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.lines[0].outcome, Outcome::Created);
    primary.with_state(|s| assert!(s.databases.contains_key("appdb")));
}

#[tokio::test]
async fn an_untrusted_or_missing_ca_never_reaches_the_server() {
    let cluster = Cluster::new();
    let (_, identity) = certificates(cluster.ip(0));
    let (other_ca, _) = certificates(cluster.ip(0));
    let mut options = cluster.options(0);
    options.tls = Some(identity);
    let primary = cluster.start(options).await;
    std::fs::write(cluster.path("other-ca.pem"), other_ca).unwrap();

    let report = converge(&converge_trusting(&cluster, Some("other-ca.pem"), 2)).await;
    assert_eq!(report.exit_code(), 3, "{report}");
    let Outcome::Failed { failure, reason } = &report.lines[0].outcome else {
        panic!("{report}")
    };
    assert_eq!(*failure, Failure::NotReady);
    assert!(
        reason.contains("/readyz") && reason.to_lowercase().contains("certificate"),
        "{reason}"
    );

    let plaintext = converge(&converge_trusting(&cluster, None, 2)).await;
    assert_eq!(plaintext.exit_code(), 3, "{plaintext}");
    primary.with_state(|s| assert!(!s.databases.contains_key("appdb")));
}

#[test]
fn a_ca_file_without_certificates_is_a_configuration_error() {
    let cluster = Cluster::new();
    std::fs::write(cluster.path("empty.pem"), "").unwrap();
    let mut args = cluster
        .converge_cli(&[], 2, databases(&["appdb"]), &[])
        .topology;
    args.tls_ca_file = Some(cluster.path("empty.pem").into());
    let error = args.topology().unwrap_err().to_string();
    assert!(
        error.contains("--tls-ca-file") && error.contains("no PEM certificate"),
        "{error}"
    );
}

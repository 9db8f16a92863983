//! Invalid specs and flags are rejected before any server is touched, naming the key and the rule.

use clap::Parser;
use immudb_hook::cli::{Cli, Command};

fn converge_error(spec: serde_json::Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "pw\n").unwrap();
    let spec_file = dir.path().join("spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let args = vec![
        "immudb-hook".to_string(),
        "--primary-host=immudb-primary-0".into(),
        format!("--admin-password-file={}", password.display()),
        "--replicas=r0,r1".into(),
        "converge".into(),
        format!("--spec-file={}", spec_file.display()),
        format!("--replication-password-file={}", password.display()),
    ];
    let cli = Cli::try_parse_from(args).expect("parses");
    let Command::Converge(converge) = &cli.command else {
        unreachable!()
    };
    converge
        .config(&cli.topology)
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn every_invalid_combination_names_its_key_and_rule() {
    use serde_json::json;
    let sync = |enabled: bool, acks: u32| json!({"databases": ["appdb"], "replication": {"sync": {"enabled": enabled, "acks": acks}}});
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            sync(true, 3),
            "replication.sync.acks",
            "cannot exceed the number of replicas (2)",
        ),
        (
            sync(false, 1),
            "replication.sync.acks",
            "need replication.sync.enabled",
        ),
        (sync(true, 0), "replication.sync.acks", "at least 1"),
        (json!({"databases": ["systemdb"]}), "databases", "reserved"),
        (
            json!({"databases": ["DefaultDB"]}),
            "databases",
            "lower-case",
        ),
        (
            json!({"databases": ["app-db"]}),
            "databases",
            "lower-case letters, digits and '_'",
        ),
        (json!({"databases": ["a", "a"]}), "databases", "appear once"),
        (json!({}), "databases", "at least one database"),
        (
            json!({"databases": ["appdb"], "replicationUser": "repl-user"}),
            "replicationUser",
            "letters, digits and '_'",
        ),
        (
            json!({"databases": ["appdb"], "replication": {"prefetchTxBufferSize": 0}}),
            "replication.prefetchTxBufferSize",
            "at least 1",
        ),
        (
            json!({"mode": "systemdb", "databases": ["appdb"]}),
            "databases",
            "systemdb mode",
        ),
        (
            json!({"databases": ["appdb"], "replication": {"commitConcurrency": 40}}),
            "replication.commitConcurrency",
            "exceeds maxConcurrency 30",
        ),
        (
            json!({"databases": ["appdb"], "mode": "sharded"}),
            "--spec-file",
            "unknown variant",
        ),
    ];
    for (spec, key, rule) in cases {
        let error = converge_error(spec.clone());
        assert!(
            error.contains(key) && error.contains(rule),
            "{spec} gave: {error}"
        );
    }
    assert!(converge_error(json!({"databases": ["a".repeat(129)]})).contains("1 to 128"));
}

#[test]
fn topology_errors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "\n").unwrap();
    let parse = |args: &[&str]| {
        let mut all = vec![
            "immudb-hook".to_string(),
            format!("--admin-password-file={}", password.display()),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        all.push("verify".into());
        all.push("--database=chart_canary".into());
        let cli = Cli::try_parse_from(all).unwrap();
        let Command::Verify(verify) = &cli.command else {
            unreachable!()
        };
        verify.config(&cli.topology).unwrap_err().to_string()
    };
    assert!(parse(&["--primary-host=p", "--replicas=p"]).contains("appear once"));
    assert!(parse(&["--primary-host=bad_host!"]).contains("--primary-host"));
    assert!(parse(&[
        "--primary-host=p",
        "--replicas=a",
        "--replica-count=2",
        "--replica-statefulset=s"
    ])
    .contains("not both"));
    assert!(parse(&[
        "--primary-host=p",
        "--replica-count=2",
        "--replica-statefulset=s",
        "--namespace=n"
    ])
    .contains("--replica-service"));
    assert!(parse(&["--primary-host=p"]).contains("the password file is empty"));
}

#[test]
fn the_statefulset_form_expands_to_pod_dns_names() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "pw").unwrap();
    let cli = Cli::try_parse_from([
        "immudb-hook".to_string(),
        "--primary-host=db-primary-0.db-primary-headless.ns.svc.cluster.local".into(),
        format!("--admin-password-file={}", password.display()),
        "--replica-statefulset=db-read".into(),
        "--replica-service=db-read-headless".into(),
        "--namespace=ns".into(),
        "--replica-count=3".into(),
        "verify".into(),
        "--database=chart_canary".into(),
    ])
    .unwrap();
    let Command::Verify(verify) = &cli.command else {
        unreachable!()
    };
    let config = verify.config(&cli.topology).unwrap();
    assert_eq!(
        config.topology.replicas,
        vec![
            "db-read-0.db-read-headless.ns.svc.cluster.local",
            "db-read-1.db-read-headless.ns.svc.cluster.local",
            "db-read-2.db-read-headless.ns.svc.cluster.local",
        ]
    );
}

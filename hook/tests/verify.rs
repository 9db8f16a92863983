//! `verify` (`helm test`) with replicas that are not running: it passes when the primary takes
//! the probe and every running replica shows it, names each replica it skipped and why, and still
//! fails when a replica that answers does not show the probe.

mod common;

use common::*;
use immudb_hook::cli::Command;
use immudb_hook::report::{Outcome, Report};
use immudb_hook::verify::verify;

const CANARY: &str = "chart_canary";

/// `verify` of the canary with `replicas`, a `timeout_s` deadline and replicas skipped after 1 s.
async fn verify_canary(cluster: &Cluster, replicas: &[String], timeout_s: u64) -> Report {
    let cli = cluster.cli(
        replicas,
        timeout_s,
        "verify",
        &["--database=chart_canary", "--skip-after-seconds=1"],
    );
    let Command::Verify(args) = &cli.command else {
        unreachable!()
    };
    verify(&args.config(&cli.topology).expect("valid config")).await
}

/// `replicas` replicas started and converged with the canary.
async fn converged(cluster: &Cluster, replicas: u8) -> Vec<immudb_double::Node> {
    let nodes = start_all(cluster, replicas).await;
    let report = converge_databases(cluster, &cluster.replica_hosts(replicas), &[CANARY]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    nodes
}

fn not_running(report: &Report, host: &str) -> Option<String> {
    outcomes(report, host).into_iter().find_map(|o| match o {
        Outcome::NotRunning { reason } => Some(reason),
        _ => None,
    })
}

#[tokio::test]
async fn a_replica_that_never_started_is_skipped_and_named() {
    let cluster = Cluster::new();
    let _nodes = converged(&cluster, 1).await;
    // Node 2 is listed (replicaCount 2) but its pod never started: nothing listens there.
    let missing = cluster.host(2);
    let report = verify_canary(&cluster, &cluster.replica_hosts(2), 20).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        matches!(
            outcomes(&report, &cluster.host(1))[..],
            [Outcome::Replicated { .. }]
        ),
        "{report}"
    );
    let reason = not_running(&report, &missing).unwrap_or_else(|| panic!("{report}"));
    assert!(
        reason.starts_with("no answer in 1 s: gRPC port") && reason.contains("refused"),
        "{reason}"
    );
    assert!(
        report.verdict().ends_with(&format!(
            "1 replica(s) returned the probe key; 1 not running, skipped: {missing}"
        )),
        "{report}"
    );
}

#[tokio::test]
async fn a_replica_on_a_lost_node_is_skipped_and_named() {
    let cluster = Cluster::new();
    let nodes = converged(&cluster, 2).await;
    let replicas = cluster.replica_hosts(2);
    nodes[2].isolate(true);
    let report = verify_canary(&cluster, &replicas, 20).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let reason = not_running(&report, &cluster.host(2)).unwrap_or_else(|| panic!("{report}"));
    // Its ports still accept connections (the node's address is there), nothing answers.
    assert!(reason.contains("/readyz"), "{reason}");
    assert!(
        report
            .to_string()
            .contains("skipped, not running: no answer in 1 s"),
        "{report}"
    );
}

#[tokio::test]
async fn a_replica_that_answers_but_does_not_replicate_fails_with_exit_6() {
    let cluster = Cluster::new();
    let nodes = converged(&cluster, 2).await;
    let replicas = cluster.replica_hosts(2);
    nodes[2].with_state(|s| {
        s.databases
            .get_mut(CANARY)
            .expect("the replica database")
            .stop_replicator()
    });
    let report = verify_canary(&cluster, &replicas, 4).await;
    assert_eq!(report.exit_code(), 6, "{report}");
    assert_eq!(not_running(&report, &cluster.host(2)), None, "{report}");
    assert!(
        report
            .to_string()
            .contains("the probe key has not arrived yet"),
        "{report}"
    );
}

#[tokio::test]
async fn no_replica_running_is_broken_not_a_skip() {
    let cluster = Cluster::new();
    let nodes = converged(&cluster, 1).await;
    nodes[1].isolate(true);
    let report = verify_canary(&cluster, &cluster.replica_hosts(1), 20).await;
    assert_eq!(report.exit_code(), 3, "{report}");
    assert!(
        report
            .to_string()
            .contains("not running, and no other replica is: no answer in 1 s"),
        "{report}"
    );
}

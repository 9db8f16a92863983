//! The hook against the immudb double: convergence, idempotence, scale-up and fault injection.

mod common;

use std::time::{Duration, Instant};

use common::*;
use immudb_double::options::Replication;
use immudb_double::Database;
use immudb_hook::reconcile::converge;
use immudb_hook::report::{Failure, Outcome, Report};
use immudb_hook::verify::verify;

fn failure_of(report: &Report, host: &str) -> Option<(Failure, String)> {
    report
        .lines
        .iter()
        .find(|l| l.host == host)
        .and_then(|l| match &l.outcome {
            Outcome::Failed { failure, reason } => Some((*failure, reason.clone())),
            _ => None,
        })
}

#[tokio::test]
async fn fresh_cluster_converges_then_a_second_run_changes_nothing() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 2).await;
    let replicas = cluster.replica_hosts(2);
    let config = cluster.converge_config(&replicas, 20, databases(&["appdb", "audit"]), &[]);

    let first = converge(&config).await;
    assert_eq!(first.exit_code(), 0, "{first}");
    assert_eq!(
        outcomes(&first, &cluster.host(0)),
        vec![Outcome::Created, Outcome::Created]
    );
    for host in &replicas {
        assert_eq!(
            outcomes(&first, host),
            vec![Outcome::Created, Outcome::Created]
        );
    }
    nodes[0].with_state(|s| {
        let user = &s.users["replicator"];
        assert_eq!(user.permissions["appdb"], 254);
        assert_eq!(user.permissions["audit"], 254);
        assert_eq!(user.password, REPLICATION_PASSWORD);
        assert!(!s.databases["appdb"].replication.replica);
    });
    nodes[1].with_state(|s| {
        let r = &s.databases["audit"].replication;
        assert!(r.replica);
        assert_eq!(r.primary_host, cluster.host(0));
        assert_eq!(r.primary_database, "audit");
        assert_eq!(r.primary_port, u32::from(GRPC_PORT));
        assert_eq!(r.primary_username, "replicator");
        assert_eq!(r.primary_password, REPLICATION_PASSWORD);
    });
    assert_eq!(
        open_sessions(&nodes),
        [0, 0, 0],
        "the Job closes its sessions"
    );

    let second = converge(&config).await;
    assert_eq!(second.exit_code(), 0, "{second}");
    assert!(
        second.lines.iter().all(|l| l.outcome == Outcome::Unchanged),
        "{second}"
    );
    assert!(second.verdict().contains("already converged"));
    assert_eq!(open_sessions(&nodes), [0, 0, 0]);
}

fn tx_counts(nodes: &[immudb_double::Node], database: &str) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| n.with_state(|s| s.databases[database].tx_count()))
        .collect()
}

#[tokio::test]
async fn verify_writes_only_into_the_canary_database() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 2).await;
    let replicas = cluster.replica_hosts(2);
    let spec = databases(&["appdb", "chart_canary"]);
    let converged = converge(&cluster.converge_config(&replicas, 20, spec, &[])).await;
    assert_eq!(converged.exit_code(), 0, "{converged}");
    let before = tx_counts(&nodes, "appdb");

    let verified = verify(&cluster.verify_config(&replicas, &["--database=chart_canary"])).await;
    assert_eq!(verified.exit_code(), 0, "{verified}");
    assert_eq!(
        open_sessions(&nodes),
        [0, 0, 0],
        "verify closes its sessions"
    );
    let replicated = verified
        .lines
        .iter()
        .filter(|l| matches!(l.outcome, Outcome::Replicated { .. }))
        .count();
    assert_eq!(replicated, 2);
    assert_eq!(
        tx_counts(&nodes, "appdb"),
        before,
        "no write reaches a user database"
    );
    assert_eq!(tx_counts(&nodes, "chart_canary"), vec![1, 1, 1]);

    // --read-only writes nothing at all, defaultdb included.
    let read_only =
        verify(&cluster.verify_config(&replicas, &["--database=defaultdb", "--read-only"])).await;
    assert_eq!(read_only.exit_code(), 0, "{read_only}");
    assert!(
        read_only
            .verdict()
            .contains("2 replica(s) hold the primary's transactions"),
        "{read_only}"
    );
    assert_eq!(tx_counts(&nodes, "chart_canary"), vec![1, 1, 1]);
    assert_eq!(tx_counts(&nodes, "defaultdb"), vec![0, 0, 0]);
}

#[tokio::test]
async fn scale_up_configures_only_the_new_replicas() {
    let cluster = Cluster::new();
    let mut nodes = start_all(&cluster, 2).await;
    let converged = converge_databases(&cluster, &cluster.replica_hosts(2), &["appdb"]).await;
    assert_eq!(converged.exit_code(), 0, "{converged}");
    for n in 3..=5 {
        nodes.push(cluster.start_node(n).await);
    }
    let scaled = converge_databases(&cluster, &cluster.replica_hosts(5), &["appdb"]).await;
    assert_eq!(scaled.exit_code(), 0, "{scaled}");
    for n in 0..=2 {
        assert_eq!(
            outcomes(&scaled, &cluster.host(n)),
            vec![Outcome::Unchanged]
        );
    }
    for n in 3..=5 {
        assert_eq!(outcomes(&scaled, &cluster.host(n)), vec![Outcome::Created]);
    }
}

#[tokio::test]
async fn wrong_admin_password_fails_fast_without_printing_it() {
    let cluster = Cluster::new();
    let mut options = cluster.options(0);
    options.admin_password = "the-real-one".into();
    let _primary = cluster.start(options).await;
    let started = Instant::now();
    let report = converge(&cluster.converge_config(&[], 60, databases(&["appdb"]), &[])).await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_eq!(report.exit_code(), 5, "{report}");
    let (failure, reason) = failure_of(&report, &cluster.host(0)).unwrap();
    assert_eq!(failure, Failure::Rejected);
    assert!(reason.contains("invalid user name or password"), "{reason}");
    let printed = format!("{report}{report:?}");
    assert!(!printed.contains(ADMIN_PASSWORD) && !printed.contains(REPLICATION_PASSWORD));
}

#[tokio::test]
async fn a_name_that_resolves_late_is_waited_for() {
    let cluster = Cluster::new();
    let _nodes = start_all(&cluster, 1).await;
    let name = "immudb-read-0.immudb-read-headless.test.svc.cluster.local";
    let hosts = cluster.path("hosts");
    let line = format!("{} {name}\n", cluster.host(1));
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut text = std::fs::read_to_string(&hosts).unwrap();
        text.push_str(&line);
        std::fs::write(&hosts, text).unwrap();
    });
    let started = Instant::now();
    let report = converge_databases(&cluster, &[name.to_string()], &["appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(outcomes(&report, name), vec![Outcome::Created]);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn a_port_that_opens_late_is_waited_for() {
    let cluster = Cluster::new();
    let _primary = cluster.start_node(0).await;
    let late = cluster.options(1);
    let network = cluster.network.clone();
    let replica = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        immudb_double::Node::start(late, &network).await.unwrap()
    });
    let report = converge_databases(&cluster, &cluster.replica_hosts(1), &["appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let replica = replica.await.unwrap();
    replica.with_state(|s| assert!(s.databases["appdb"].replication.replica));
}

#[tokio::test]
async fn unavailable_answers_are_retried() {
    let cluster = Cluster::new();
    let mut options = cluster.options(0);
    options.unavailable_first = 6;
    let primary = cluster.start(options).await;
    let _replica = cluster.start_node(1).await;
    let report = converge_databases(&cluster, &cluster.replica_hosts(1), &["appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        primary
            .faults
            .unavailable_first
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn a_replica_that_never_comes_up_is_named_and_the_others_are_configured() {
    let cluster = Cluster::new();
    let _nodes = start_all(&cluster, 2).await;
    let replicas = cluster.replica_hosts(3);
    let report = converge(&cluster.converge_config(&replicas, 3, databases(&["appdb"]), &[])).await;
    assert_eq!(report.exit_code(), 3, "{report}");
    assert_eq!(outcomes(&report, &replicas[0]), vec![Outcome::Created]);
    assert_eq!(outcomes(&report, &replicas[1]), vec![Outcome::Created]);
    let (failure, reason) = failure_of(&report, &replicas[2]).unwrap();
    assert_eq!(failure, Failure::NotReady);
    assert!(reason.contains("not ready before the deadline"), "{reason}");
    assert!(
        reason.contains(&replicas[2]),
        "the reason names the address: {reason}"
    );
}

#[tokio::test]
async fn a_version_mismatch_fails_listing_every_version() {
    let cluster = Cluster::new();
    let _primary = cluster.start_node(0).await;
    let _good = cluster.start_node(1).await;
    let mut old = cluster.options(2);
    old.version = "1.10.0".into();
    let _old = cluster.start(old).await;
    let report = converge_databases(&cluster, &cluster.replica_hosts(2), &["appdb"]).await;
    assert_eq!(report.exit_code(), 4, "{report}");
    let verdict = report.verdict();
    assert!(
        verdict.contains(&format!("{}=1.11.1", cluster.host(0))),
        "{verdict}"
    );
    assert!(
        verdict.contains(&format!("{}=1.10.0", cluster.host(2))),
        "{verdict}"
    );
}

#[tokio::test]
async fn synchronous_replication_sets_acks_on_the_primary_only() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 3).await;
    let report = converge(&cluster.converge_config(
        &cluster.replica_hosts(3),
        20,
        serde_json::json!({"databases": ["appdb"], "replication": {"sync": {"enabled": true, "acks": 2}}}),
        &[],
    ))
    .await;
    assert_eq!(report.exit_code(), 0, "{report}");
    nodes[0].with_state(|s| {
        let r = &s.databases["appdb"].replication;
        assert!(r.sync_replication && r.sync_acks == 2 && !r.replica);
    });
    nodes[3].with_state(|s| {
        let r = &s.databases["appdb"].replication;
        assert!(r.sync_replication && r.sync_acks == 0 && r.replica);
    });
    // Lowering the acks later updates the primary in place.
    let lowered = converge(&cluster.converge_config(
        &cluster.replica_hosts(3),
        20,
        serde_json::json!({"databases": ["appdb"], "replication": {"sync": {"enabled": true, "acks": 1}}}),
        &[],
    ))
    .await;
    assert_eq!(outcomes(&lowered, &cluster.host(0)), vec![Outcome::Updated]);
}

#[tokio::test]
async fn a_moved_primary_updates_the_replica_settings() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    nodes[1].with_state(|s| {
        s.databases.insert(
            "appdb".into(),
            Database {
                replication: Replication {
                    replica: true,
                    primary_database: "appdb".into(),
                    primary_host: "old-primary".into(),
                    primary_port: 3322,
                    primary_username: "replicator".into(),
                    primary_password: REPLICATION_PASSWORD.into(),
                    prefetch_tx_buffer_size: 100,
                    replication_commit_concurrency: 10,
                    ..Default::default()
                },
                loaded: true,
                ..Default::default()
            },
        );
    });
    let report = converge_databases(&cluster, &cluster.replica_hosts(1), &["appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(outcomes(&report, &cluster.host(1)), vec![Outcome::Updated]);
    nodes[1].with_state(|s| {
        assert_eq!(
            s.databases["appdb"].replication.primary_host,
            cluster.host(0)
        )
    });
}

#[tokio::test]
async fn a_writable_database_on_a_replica_is_left_alone_and_reported() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    nodes[1].with_state(|s| {
        let mut db = Database::loaded();
        db.ledger.commit(&[(b"k".to_vec(), b"precious".to_vec())]);
        s.databases.insert("appdb".into(), db);
    });
    let report = converge_databases(&cluster, &cluster.replica_hosts(1), &["appdb"]).await;
    assert_eq!(report.exit_code(), 5, "{report}");
    let (_, reason) = failure_of(&report, &cluster.host(1)).unwrap();
    assert!(reason.contains("is not a replica"), "{reason}");
    nodes[1].with_state(|s| {
        let db = &s.databases["appdb"];
        assert!(!db.replication.replica);
        assert_eq!(db.ledger.get(b"k"), Some((1, b"precious".to_vec())));
    });
}

#[tokio::test]
async fn catch_up_waits_for_the_primary_transactions() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    let config = cluster.converge_config(&cluster.replica_hosts(1), 20, databases(&["appdb"]), &[]);
    assert_eq!(converge(&config).await.exit_code(), 0);
    nodes[0].with_state(|s| {
        let db = s.databases.get_mut("appdb").unwrap();
        for i in 0..5u8 {
            db.ledger.commit(&[(vec![i], vec![i])]);
        }
    });
    let report = converge(&cluster.converge_config(
        &cluster.replica_hosts(1),
        20,
        databases(&["appdb"]),
        &["--wait-for-catch-up"],
    ))
    .await;
    assert_eq!(report.exit_code(), 0, "{report}");
    nodes[1].with_state(|s| {
        let (primary, replica) = (
            nodes[0].with_state(|p| p.databases["appdb"].ledger.state()),
            s.databases["appdb"].ledger.state(),
        );
        assert_eq!(replica.0, 5);
        assert_eq!(
            replica, primary,
            "the replica holds the primary's transactions, Alh for Alh"
        );
    });
}

#[tokio::test]
async fn systemdb_mode_checks_the_replicas_env_setup() {
    let cluster = Cluster::new();
    let _primary = cluster.start_node(0).await;
    let mut replicating = cluster.options(1);
    replicating.server_replica_of = Some((cluster.host(0), GRPC_PORT));
    let _replica = cluster.start(replicating).await;
    let _plain = cluster.start_node(2).await;
    let report = converge(&cluster.converge_config(
        &cluster.replica_hosts(2),
        20,
        serde_json::json!({"mode": "systemdb"}),
        &[],
    ))
    .await;
    assert_eq!(report.exit_code(), 5, "{report}");
    assert_eq!(
        outcomes(&report, &cluster.host(1)),
        vec![Outcome::Unchanged]
    );
    let (_, reason) = failure_of(&report, &cluster.host(2)).unwrap();
    assert!(reason.contains("IMMUDB_REPLICATION_"), "{reason}");
}

#[tokio::test]
async fn an_unreachable_primary_skips_the_replicas() {
    let cluster = Cluster::new();
    let _replica = cluster.start_node(1).await;
    let report = converge(&cluster.converge_config(
        &cluster.replica_hosts(1),
        2,
        databases(&["appdb"]),
        &[],
    ))
    .await;
    assert_eq!(report.exit_code(), 3, "{report}");
    assert_eq!(
        failure_of(&report, &cluster.host(1)).unwrap().0,
        Failure::Skipped
    );
}

#[tokio::test]
async fn two_converges_racing_on_the_same_nodes_both_succeed() {
    // The agents and the Job act on the same nodes: whoever loses a create observes and re-plans.
    let cluster = Cluster::new();
    let mut nodes = Vec::new();
    for n in 0..=2 {
        let mut options = cluster.options(n);
        options.latency = Duration::from_millis(20);
        nodes.push(cluster.start(options).await);
    }
    let replicas = cluster.replica_hosts(2);
    let spec = databases(&["appdb", "audit"]);
    let config = cluster.converge_config(&replicas, 20, spec, &[]);
    let (a, b) = tokio::join!(converge(&config), converge(&config));
    assert_eq!((a.exit_code(), b.exit_code()), (0, 0), "{a}\n{b}");
    nodes[0].with_state(|s| {
        let user = &s.users["replicator"];
        assert_eq!(
            (user.permissions["appdb"], user.permissions["audit"]),
            (254, 254)
        );
    });
}

#[tokio::test]
async fn a_primary_that_lost_a_database_a_replica_holds_is_not_given_an_empty_one() {
    let cluster = Cluster::new();
    let mut nodes = start_all(&cluster, 1).await;
    let replicas = cluster.replica_hosts(1);
    let config = cluster.converge_config(&replicas, 20, databases(&["appdb"]), &[]);
    assert_eq!(converge(&config).await.exit_code(), 0);
    nodes[0].with_state(|s| {
        s.databases
            .get_mut("appdb")
            .unwrap()
            .ledger
            .commit(&[(b"k".to_vec(), b"v".to_vec())]);
    });
    let replica = &nodes[1];
    tokio::time::timeout(Duration::from_secs(5), async {
        while replica.with_state(|s| s.databases["appdb"].tx_count()) < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    // The primary comes back on a new, empty volume.
    drop(nodes.remove(0));
    tokio::time::sleep(Duration::from_millis(100)).await; // the aborted server releases its ports
    nodes.insert(0, cluster.start_node(0).await);
    let report = converge(&cluster.converge_config(&replicas, 5, databases(&["appdb"]), &[])).await;
    assert_eq!(report.exit_code(), 5, "{report}");
    let (_, reason) = failure_of(&report, &cluster.host(0)).unwrap();
    assert!(
        reason.contains(&format!("replica {} holds 1 transactions", cluster.host(1))),
        "{reason}"
    );
    assert!(reason.contains("rebuild the primary"), "{reason}");
    assert!(
        nodes[0].with_state(|s| !s.databases.contains_key("appdb")),
        "nothing created"
    );
}

//! Replicas after a quiet period, against a double whose replicators sleep as immudb's do
//! (`immudb_double::replicator::Backoff`), at a quarter of immudb's timing so the tests stay
//! short: sleeps of 0.5, 1, 2, 4, 8 ... s, capped at 30 s (immudb: 2, 4, 8 ... capped at 2 min).
//! The agent watches at the same scale: a look every 250 ms, a wake after 0.5 s without progress
//! (immudb's first sleep), stalled after 2.5 s.

mod common;

use std::time::Duration;

use common::*;
use immudb_double::replicator::Backoff;
use immudb_double::Node;
use immudb_hook::client::Client;
use immudb_hook::reconcile::converge;
use immudb_hook::types::{Credentials, Secret};

/// immudb's backoff, four times faster.
const QUARTER: Backoff = Backoff {
    min: Duration::from_millis(250),
    max: Duration::from_secs(30),
};
/// The agent's flags at the same scale.
const WATCHING: &[&str] = &[
    "--poll-interval=2s",
    "--max-lag=10s",
    "--watch-interval=250ms",
    "--wake-after=500ms",
    "--stall-after=2500ms",
];
const WAKES: &str = "immudb_agent_replicator_wakes_total{db=\"appdb\"}";

fn spec() -> serde_json::Value {
    databases(&["appdb"])
}

fn sync_spec() -> serde_json::Value {
    serde_json::json!({"databases": ["appdb"], "replication": {"sync": {"enabled": true, "acks": 1}}})
}

/// A primary and `replicas` replicas whose replicators back off like immudb's (scaled),
/// converged by the Job to `spec`.
async fn cluster_with_quarter_backoff(
    cluster: &Cluster,
    replicas: u8,
    spec: serde_json::Value,
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for n in 0..=replicas {
        let mut options = cluster.options(n);
        options.replication_retry = QUARTER;
        nodes.push(cluster.start(options).await);
    }
    let report =
        converge(&cluster.converge_config(&cluster.replica_hosts(replicas), 20, spec, &[])).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    nodes
}

/// An admin session on the primary's appdb.
async fn writer(primary: &Node) -> Client {
    let admin = Credentials {
        user: "immudb".into(),
        password: Secret::new(ADMIN_PASSWORD),
    };
    let client = Client::new(&target(primary))
        .unwrap()
        .open_session(&admin, "appdb")
        .await
        .unwrap();
    client
}

fn holds(node: &Node, tx: u64) -> bool {
    node.with_state(|s| {
        s.databases
            .get("appdb")
            .is_some_and(|db| db.tx_count() >= tx)
    })
}

fn replicator_failures(node: &Node) -> u32 {
    node.with_state(|s| s.databases["appdb"].replicator.failures)
}

#[tokio::test]
async fn a_write_after_a_quiet_period_reaches_a_watched_replica_at_once_and_waits_on_one_alone() {
    let cluster = Cluster::new();
    let nodes = cluster_with_quarter_backoff(&cluster, 2, spec()).await;
    // Replica 1 has its agent; replica 2 has none, as immudb alone.
    let agent = cluster.agent(1, &cluster.replica_hosts(2), spec(), WATCHING);
    let client = writer(&nodes[0]).await;
    assert_eq!(client.set(b"k", b"1").await.unwrap(), 1);
    assert!(
        eventually(SHORT * 5, || async {
            holds(&nodes[1], 1) && holds(&nodes[2], 1)
        })
        .await
    );
    assert!(eventually(SHORT * 5, || agent.ready()).await);
    // The first write may have needed a wake too: the replicators slept since the Job ran.
    let woken = agent.metric(WAKES).await.unwrap();

    // 8 s quiet: the replicators fetched at about 0.5, 1.5, 3.5 and 7.5 s and now sleep 8 s.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        replicator_failures(&nodes[2]) >= 4,
        "{}",
        replicator_failures(&nodes[2])
    );
    assert_eq!(
        agent.metric(WAKES).await,
        Some(woken),
        "nothing to wake while quiet"
    );
    assert_eq!(client.set(b"k", b"2").await.unwrap(), 2);

    // The agent notices at its next look and wakes replica 1; replica 2 sleeps at least until
    // 13.95 s (every sleep shortened by the full 10 % jitter), 5.9 s after the write.
    assert!(
        eventually(SHORT * 2, || async { holds(&nodes[1], 2) }).await,
        "the watched replica did not get the write within 4 s"
    );
    assert!(
        !holds(&nodes[2], 2),
        "the unwatched replica got it as fast: nothing to show"
    );
    assert_eq!(agent.metric(WAKES).await, Some(woken + 1.0));
    assert!(agent.ready().await, "{:?}", agent.get("/readyz").await);
    // immudb's own retry catches up in the end.
    assert!(eventually(SHORT * 8, || async { holds(&nodes[2], 2) }).await);
}

#[tokio::test]
async fn a_replica_catching_up_is_never_woken() {
    let cluster = Cluster::new();
    let nodes = cluster_with_quarter_backoff(&cluster, 0, spec()).await;
    // 40,000 transactions: a new replica copies 256 every 50 ms, so it is behind for about 8 s,
    // advancing at every one of the agent's looks.
    nodes[0].with_state(|s| {
        let db = s.databases.get_mut("appdb").unwrap();
        for i in 0..40_000u32 {
            db.ledger
                .commit(&[(i.to_be_bytes().to_vec(), b"v".to_vec())]);
        }
    });
    let mut options = cluster.options(1);
    options.replication_retry = QUARTER;
    let replica = cluster.start(options).await;
    let agent = cluster.agent(1, &cluster.replica_hosts(1), spec(), WATCHING);
    assert!(
        eventually(SHORT * 15, || agent.ready()).await,
        "{:?}",
        agent.get("/readyz").await
    );
    assert!(holds(&replica, 40_000));
    assert_eq!(agent.metric(WAKES).await, Some(0.0));
}

#[tokio::test]
async fn a_synchronous_replica_never_sleeps_and_is_never_woken() {
    let cluster = Cluster::new();
    let nodes = cluster_with_quarter_backoff(&cluster, 1, sync_spec()).await;
    let agent = cluster.agent(1, &cluster.replica_hosts(1), sync_spec(), WATCHING);
    assert!(eventually(SHORT * 5, || agent.ready()).await);
    let client = writer(&nodes[0]).await;
    for (quiet, tx) in [(0, 1), (4, 2), (8, 3)] {
        tokio::time::sleep(Duration::from_secs(quiet)).await;
        // The write commits only once the replica holds it: no sleep delays it.
        let written = tokio::time::timeout(SHORT, client.set(b"k", b"v")).await;
        assert_eq!(written.expect("acknowledged within 2 s").unwrap(), tx);
        assert_eq!(
            replicator_failures(&nodes[1]),
            0,
            "an empty answer is no failure"
        );
    }
    assert!(eventually(SHORT, || async { holds(&nodes[1], 3) }).await);
    assert_eq!(agent.metric(WAKES).await, Some(0.0));
    assert!(agent.ready().await);
}

//! The agent against the immudb double, one situation per test: what it repairs, what it leaves
//! alone, and when the pod is Ready.

mod common;

use std::time::Duration;

use common::*;
use immudb_double::Database;
use immudb_hook::plan::health::Repair;
use immudb_hook::reconcile::converge;
use strum::VariantArray;

const WAIT: Duration = Duration::from_secs(10);

fn spec() -> serde_json::Value {
    databases(&["appdb"])
}

/// A primary and `replicas` replicas converged by the Job, `writes` transactions on the primary.
async fn converged(cluster: &Cluster, replicas: u8, writes: u8) -> Vec<immudb_double::Node> {
    let nodes = start_all(cluster, replicas).await;
    let hosts = cluster.replica_hosts(replicas);
    let report = converge(&cluster.converge_config(&hosts, 20, spec(), &[])).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    write(&nodes[0], writes);
    nodes
}

fn write(primary: &immudb_double::Node, count: u8) {
    primary.with_state(|s| {
        let db = s.databases.get_mut("appdb").unwrap();
        for i in 0..count {
            db.ledger.commit(&[(vec![i], vec![i])]);
        }
    });
}

fn tx_count(node: &immudb_double::Node) -> u64 {
    node.with_state(|s| s.databases.get("appdb").map_or(0, Database::tx_count))
}

const CREATED: &str = "immudb_agent_repairs_total{db=\"appdb\",reason=\"created\"}";
const RESTARTED: &str = "immudb_agent_repairs_total{db=\"appdb\",reason=\"replicator_restarted\"}";

fn state_series(state: &str) -> String {
    format!("immudb_agent_database_state{{db=\"appdb\",state=\"{state}\"}}")
}

/// `immudb_agent_repairs_total` of `db` for every reason the planner can give, from `/metrics`.
async fn repairs(agent: &RunningAgent, db: &str) -> Vec<Option<f64>> {
    let mut counts = Vec::new();
    for reason in Repair::VARIANTS {
        let series = format!(
            "immudb_agent_repairs_total{{db=\"{db}\",reason=\"{}\"}}",
            reason.name()
        );
        counts.push(agent.metric(&series).await);
    }
    counts
}

#[tokio::test]
async fn a_new_replica_configures_itself_and_is_ready_once_caught_up() {
    let cluster = Cluster::new();
    let nodes = converged(&cluster, 1, 50).await;
    // Scaled out without a helm upgrade: no Job runs for the new pod.
    let new = cluster.start_node(2).await;
    let agent = cluster.agent(2, &cluster.replica_hosts(2), spec(), &[]);
    assert!(
        eventually(WAIT, || agent.ready()).await,
        "{:?}",
        agent.get("/readyz").await
    );
    assert_eq!(tx_count(&new), tx_count(&nodes[0]));
    assert_eq!(agent.metric(CREATED).await, Some(1.0));
    assert_eq!(
        agent.metric("immudb_agent_replicating{db=\"appdb\"}").await,
        Some(1.0)
    );
    assert_eq!(
        agent
            .metric("immudb_agent_lag_transactions{db=\"appdb\"}")
            .await,
        Some(0.0)
    );
    new.with_state(|s| {
        let r = &s.databases["appdb"].replication;
        assert!(r.replica && r.primary_host == cluster.host(0));
    });
}

#[tokio::test]
async fn a_replicator_stopped_by_a_version_mismatch_is_restarted_once_versions_match() {
    let cluster = Cluster::new();
    let nodes = converged(&cluster, 1, 3).await;
    let agent = cluster.agent(1, &cluster.replica_hosts(1), spec(), &[]);
    assert!(eventually(WAIT, || agent.ready()).await);
    assert_eq!(
        repairs(&agent, "appdb").await,
        vec![Some(0.0); Repair::VARIANTS.len()],
        "every reason is exported at 0 before the first repair"
    );

    // A rollout half done: the primary runs another version; the replicator stops for good.
    nodes[0].with_state(|s| s.version = "1.11.2".into());
    write(&nodes[0], 1);
    assert!(
        eventually(WAIT, || async {
            agent.metric(&state_series("version_mismatch")).await == Some(1.0)
        })
        .await
    );
    assert!(!agent.ready().await, "data no longer advances");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        agent.metric(RESTARTED).await,
        Some(0.0),
        "no restart while versions differ"
    );
    assert!(!nodes[1].with_state(|s| s.databases["appdb"].replicator.running));

    // Versions agree again: the replicator stays stopped until the agent reloads the database.
    nodes[0].with_state(|s| s.version = "1.11.1".into());
    assert!(
        eventually(WAIT, || agent.ready()).await,
        "{:?}",
        agent.get("/readyz").await
    );
    assert_eq!(agent.metric(RESTARTED).await, Some(1.0));
    assert_eq!(tx_count(&nodes[1]), 4);
}

#[tokio::test]
async fn a_missing_replica_database_is_created_again() {
    let cluster = Cluster::new();
    let nodes = converged(&cluster, 1, 5).await;
    let agent = cluster.agent(1, &cluster.replica_hosts(1), spec(), &[]);
    assert!(eventually(WAIT, || agent.ready()).await);
    nodes[1].with_state(|s| s.databases.remove("appdb"));
    assert!(eventually(WAIT, || async { agent.metric(CREATED).await == Some(1.0) }).await);
    assert!(eventually(WAIT, || agent.ready()).await);
    assert_eq!(tx_count(&nodes[1]), 5);
}

/// immudb accepts an update of a setting it does not store (a wrong field number, say): the agent
/// sends it once and then says so, instead of sending it again every drift grace (1 s here).
#[tokio::test]
async fn a_setting_immudb_accepts_but_never_reports_back_is_sent_once() {
    let cluster = Cluster::new();
    let nodes = converged(&cluster, 0, 1).await;
    nodes[0]
        .faults
        .storage_updates_ignored
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let spec = serde_json::json!({
        "databases": ["appdb"],
        "settings": { "retentionPeriod": "48h" },
    });
    let agent = cluster.agent(0, &[], spec, &[]);
    const SETTINGS: &str = "immudb_agent_repairs_total{db=\"appdb\",reason=\"settings\"}";
    const UNCONFIRMED: &str = "immudb_agent_settings_unconfirmed{db=\"appdb\"}";
    assert!(
        eventually(WAIT, || async {
            agent.metric(UNCONFIRMED).await == Some(1.0)
        })
        .await
    );
    assert_eq!(agent.metric(SETTINGS).await, Some(1.0));
    // Three more grace periods: nothing is sent again, the pod stays Ready.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(agent.metric(SETTINGS).await, Some(1.0));
    assert_eq!(agent.metric(UNCONFIRMED).await, Some(1.0));
    assert!(agent.ready().await);
}

#[tokio::test]
async fn a_writable_database_where_a_replica_belongs_is_reported_and_left_alone() {
    let cluster = Cluster::new();
    let nodes = converged(&cluster, 0, 1).await;
    let replica = cluster.start_node(1).await;
    replica.with_state(|s| {
        let mut db = Database::loaded();
        db.ledger.commit(&[(b"k".to_vec(), b"precious".to_vec())]);
        s.databases.insert("appdb".into(), db);
    });
    let agent = cluster.agent(1, &cluster.replica_hosts(1), spec(), &[]);
    assert!(
        eventually(WAIT, || async {
            agent.metric(&state_series("not_a_replica")).await == Some(1.0)
        })
        .await
    );
    let (status, body) = agent.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("database 'appdb' is not_a_replica") && body.contains("never overwrites"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    replica.with_state(|s| {
        let db = &s.databases["appdb"];
        assert!(!db.replication.replica);
        assert_eq!(db.ledger.get(b"k"), Some((1, b"precious".to_vec())));
    });
    drop(nodes);
}

#[tokio::test]
async fn an_unreachable_primary_keeps_a_caught_up_replica_ready() {
    let cluster = Cluster::new();
    let mut nodes = converged(&cluster, 1, 2).await;
    let agent = cluster.agent(1, &cluster.replica_hosts(1), spec(), &[]);
    assert!(eventually(WAIT, || agent.ready()).await);
    assert_eq!(
        agent.metric("immudb_agent_primary_reachable").await,
        Some(1.0)
    );
    drop(nodes.remove(0));
    assert!(
        eventually(WAIT, || async {
            agent.metric("immudb_agent_primary_reachable").await == Some(0.0)
        })
        .await
    );
    assert!(agent.ready().await, "stale reads beat no reads");
    assert_eq!(
        agent.metric(&state_series("primary_unreachable")).await,
        Some(1.0)
    );
}

#[tokio::test]
async fn lag_beyond_the_bound_makes_a_replica_unready_and_catching_up_ready_again() {
    let cluster = Cluster::new();
    let nodes = converged(&cluster, 1, 1).await;
    let agent = cluster.agent(1, &cluster.replica_hosts(1), spec(), &[]);
    assert!(eventually(WAIT, || agent.ready()).await);
    // The replication user's password changes on the primary only: fetches fail, lag grows.
    nodes[0].with_state(|s| s.users.get_mut("replicator").unwrap().password = "rotated".into());
    write(&nodes[0], 3);
    assert!(
        eventually(WAIT, || async {
            agent.metric(&state_series("lagging")).await == Some(1.0)
        })
        .await
    );
    assert!(!agent.ready().await);
    let lag = agent
        .metric("immudb_agent_lag_seconds{db=\"appdb\"}")
        .await
        .unwrap();
    assert!(lag > 2.0, "{lag}");
    assert_eq!(
        agent
            .metric("immudb_agent_lag_transactions{db=\"appdb\"}")
            .await,
        Some(3.0)
    );
    nodes[0].with_state(|s| {
        s.users.get_mut("replicator").unwrap().password = REPLICATION_PASSWORD.into()
    });
    assert!(eventually(WAIT, || agent.ready()).await);
    assert_eq!(tx_count(&nodes[1]), 4);
}

#[tokio::test]
async fn agents_and_the_job_converging_a_fresh_cluster_at_once_all_succeed() {
    let cluster = Cluster::new();
    let _nodes = start_all(&cluster, 2).await;
    let hosts = cluster.replica_hosts(2);
    let agents: Vec<RunningAgent> = (0..=2)
        .map(|n| cluster.agent(n, &hosts, spec(), &[]))
        .collect();
    let report = converge(&cluster.converge_config(&hosts, 20, spec(), &[])).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    for agent in &agents {
        assert!(
            eventually(WAIT, || agent.ready()).await,
            "{:?}",
            agent.get("/readyz").await
        );
    }
}

#[tokio::test]
async fn a_primary_agent_configures_a_fresh_primary_but_never_recreates_a_lost_database() {
    let cluster = Cluster::new();
    let mut nodes = converged(&cluster, 1, 2).await;
    let hosts = cluster.replica_hosts(1);
    assert!(eventually(WAIT, || async { tx_count(&nodes[1]) == 2 }).await);
    // The primary comes back on a new volume: a replica still holds appdb.
    drop(nodes.remove(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let primary = cluster.start_node(0).await;
    let agent = cluster.agent(0, &hosts, spec(), &[]);
    assert!(
        eventually(WAIT, || async {
            agent.metric(&state_series("lost_on_primary")).await == Some(1.0)
        })
        .await
    );
    let (status, body) = agent.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("rebuild the primary"), "{body}");
    assert!(primary.with_state(|s| !s.databases.contains_key("appdb")));
    assert_eq!(agent.metric("immudb_agent_ready").await, Some(0.0));

    // On a truly fresh cluster (no replica holds anything) it creates everything itself.
    let fresh = Cluster::new();
    let _fresh_nodes = start_all(&fresh, 1).await;
    let fresh_agent = fresh.agent(0, &fresh.replica_hosts(1), spec(), &[]);
    assert!(eventually(WAIT, || fresh_agent.ready()).await);
    assert_eq!(fresh_agent.metric(CREATED).await, Some(1.0));
}

#[tokio::test]
async fn sessions_are_opened_once_and_reused_across_polls() {
    let cluster = Cluster::new();
    let nodes = converged(&cluster, 1, 1).await;
    let agent = cluster.agent(1, &cluster.replica_hosts(1), spec(), &[]);
    assert!(
        eventually(WAIT, || async {
            agent.metric("immudb_agent_polls_total").await >= Some(20.0)
        })
        .await
    );
    assert_eq!(
        agent.metric("immudb_agent_logins_total").await,
        Some(2.0),
        "one local, one primary"
    );
    assert_eq!(nodes[1].with_state(|s| s.session_count()), 1);
    assert_eq!(nodes[0].with_state(|s| s.session_count()), 1);
}

#[tokio::test]
async fn in_systemdb_mode_the_agent_decides_readiness_and_changes_nothing() {
    let cluster = Cluster::new();
    let primary = cluster.start_node(0).await;
    let mut options = cluster.options(1);
    options.server_replica_of = Some((cluster.host(0), GRPC_PORT));
    let replica = cluster.start(options).await;
    primary.with_state(|s| {
        let db = s.databases.get_mut("defaultdb").unwrap();
        db.ledger.commit(&[(b"k".to_vec(), b"v".to_vec())]);
    });
    let spec = serde_json::json!({"mode": "systemdb"});
    let agent = cluster.agent(1, &cluster.replica_hosts(1), spec.clone(), &[]);
    assert!(
        eventually(WAIT, || agent.ready()).await,
        "{:?}",
        agent.get("/readyz").await
    );
    assert_eq!(
        replica.with_state(|s| s.databases["defaultdb"].tx_count()),
        1
    );
    primary.with_state(|s| s.version = "1.11.2".into());
    primary.with_state(|s| {
        s.databases
            .get_mut("defaultdb")
            .unwrap()
            .ledger
            .commit(&[(b"k".to_vec(), b"w".to_vec())]);
    });
    assert!(eventually(WAIT, || async { !agent.ready().await }).await);
    let stopped = || async { !replica.with_state(|s| s.databases["defaultdb"].replicator.running) };
    assert!(
        eventually(WAIT, stopped).await,
        "the replicator saw the other version"
    );
    primary.with_state(|s| s.version = "1.11.1".into());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !agent.ready().await,
        "only a restart of the pod restarts defaultdb's replicator"
    );
    let (_, metrics) = agent.get("/metrics").await;
    assert!(
        metrics.contains("state=\"replicator_stopped\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        repairs(&agent, "defaultdb").await,
        vec![Some(0.0); Repair::VARIANTS.len()],
        "no repair: {metrics}"
    );
    let primary_agent = cluster.agent(0, &cluster.replica_hosts(1), spec, &[]);
    assert!(eventually(WAIT, || primary_agent.ready()).await);
}

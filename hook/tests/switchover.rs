//! Planned stops with failover, end to end (`common::release`): the kubelet runs the immudb
//! container's preStop hook (GET /prestop on the agent) before it stops immudb. The primary hands
//! its role over first (fence, copy what the chosen replica lacks, move the Lease, the new
//! primary polled at once); a replica drains. A writer through the write Service never loses an
//! acknowledged write, the role moves once per rollout, and a hand-over that cannot finish falls
//! back to keeping the Lease through the restart.

mod common;

use std::time::Duration;

use common::release::*;
use common::*;

/// The hand-over's timings for the doubles: a 2 s Lease, a hand-over bound of 1.5 s, a rollout
/// wait of 10 s, a drain of 200 ms.
const FLAGS: &[&str] = &[
    "--lease-duration=2s",
    "--switchover-timeout=1500ms",
    "--rollout-wait=10s",
    "--drain=200ms",
];

const HANDED_OVER: &str = "immudb_agent_switchovers_total{outcome=\"handed_over\"}";
const KEPT_ROLE: &str = "immudb_agent_switchovers_total{outcome=\"kept_role\"}";

async fn release(spec: serde_json::Value, flags: &[&str]) -> Release {
    let flags: Vec<&str> = FLAGS.iter().chain(flags).copied().collect();
    let release = Release::start_flagged(spec, &flags).await;
    assert!(
        eventually(WAIT, || release.settled_on(0)).await,
        "{:?}",
        release.readyz(1).await
    );
    release
}

/// The node holding the Lease.
fn holder_node(release: &Release) -> Option<u8> {
    let holder = release.holder()?;
    (0..release.nodes.len() as u8).find(|&n| pod_host(n) == holder)
}

/// Every key is on `node`.
fn missing_on(release: &Release, node: u8, keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter(|k| !holds(&release.nodes[node as usize], k))
        .cloned()
        .collect()
}

/// No agent counted a failover.
async fn no_failover(release: &Release) {
    for agent in release.agents.iter().flatten() {
        assert_eq!(
            agent.metric("immudb_agent_failovers_total").await,
            Some(0.0)
        );
    }
}

#[tokio::test]
async fn a_planned_restart_of_the_primary_hands_over_first_and_loses_no_acknowledged_write() {
    let mut release = release(sync_spec(), &[]).await;
    let writer = Writer::start(&release);
    assert!(eventually(WAIT, || async { writer.count() > 20 }).await);
    // kubectl rollout restart of the primary's StatefulSet.
    let stopped = release.roll(&[StatefulSet::Primary], None).await;
    assert_eq!(stopped.len(), 1);
    let old = &stopped[0];
    let target = holder_node(&release).expect("someone holds the Lease");
    assert_ne!(target, 0, "the role moved before the primary stopped");
    assert_eq!(
        old.answer.trim(),
        format!("handed the primary role to {}", pod_host(target))
    );
    assert_eq!(old.metric(HANDED_OVER), Some(1.0), "{}", old.metrics);
    assert_eq!(old.metric(KEPT_ROLE), Some(0.0));
    assert_eq!(old.metric("immudb_agent_failovers_total"), Some(0.0));
    // Writes go on through the same Service name, on the new primary.
    let before = writer.count();
    assert!(eventually(WAIT, || async { writer.count() > before + 20 }).await);
    // The old primary is back, as a replica of the new one: the release settles, the role
    // moved once.
    assert!(
        eventually(WAIT, || release.settled_on(target)).await,
        "{:?}",
        release.readyz(0).await
    );
    let (acknowledged, longest) = writer.stop();
    assert_eq!(
        missing_on(&release, target, &acknowledged),
        Vec::<String>::new(),
        "acknowledged writes missing on the new primary"
    );
    assert_eq!(release.transitions(), 1);
    no_failover(&release).await;
    release.no_two_primaries();
    eprintln!(
        "{} writes acknowledged; longest gap between two: {longest:?}",
        acknowledged.len()
    );
}

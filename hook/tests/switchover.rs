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
use immudb_hook::client::Client;

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
const RECEIVED: &str = "immudb_agent_switchovers_total{outcome=\"received\"}";

/// A settled release (primary-0 the primary) whose agents get [`FLAGS`], `flags` replacing
/// those of the same name.
async fn release(spec: serde_json::Value, flags: &[&str]) -> Release {
    let name = |flag: &str| flag.split('=').next().unwrap_or_default().to_string();
    let flags: Vec<&str> = FLAGS
        .iter()
        .filter(|f| !flags.iter().any(|g| name(g) == name(f)))
        .chain(flags)
        .copied()
        .collect();
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

/// Stops the writer: every write it got acknowledged is on the primary `on`, no failover was
/// counted, never two writable primaries. Prints the longest gap between acknowledgements.
async fn nothing_lost_and_no_failover(release: &Release, writer: Writer, on: u8) {
    let (acknowledged, longest) = writer.stop();
    assert_eq!(
        missing_on(release, on, &acknowledged),
        Vec::<String>::new(),
        "acknowledged writes missing on the primary"
    );
    no_failover(release).await;
    release.no_two_primaries();
    eprintln!(
        "{} writes acknowledged; longest gap between two: {longest:?}",
        acknowledged.len()
    );
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
    // The new primary counts what it received: its count outlives the stopping pod.
    let receiver = release.agents[target as usize]
        .as_ref()
        .expect("the new primary's agent runs");
    assert_eq!(receiver.metric(RECEIVED).await, Some(1.0));
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
    assert_eq!(release.transitions(), 1);
    nothing_lost_and_no_failover(&release, writer, target).await;
}

#[tokio::test]
async fn a_replica_that_is_behind_gets_what_it_lacks_from_the_fenced_primary() {
    // Asynchronous replication: the replicas stop receiving (the primary refuses their
    // fetches) and miss the last three acknowledged writes; nothing but the hand-over's copy
    // can bring those to the new primary.
    let mut release = release(async_spec(), &["--allow-data-loss"]).await;
    write(&release, "replicated").await;
    assert!(
        eventually(WAIT, || async {
            release.nodes[1..].iter().all(|n| holds(n, "replicated"))
        })
        .await
    );
    release.nodes[0].with_state(|s| s.refuse_replication = true);
    let behind: Vec<String> = (0..3).map(|i| format!("only-on-the-primary-{i}")).collect();
    for key in &behind {
        write(&release, key).await;
    }
    assert!(release.nodes[1..]
        .iter()
        .all(|n| !holds(n, "only-on-the-primary-0")));
    let stopped = release.restart(0).await;
    let target = holder_node(&release).expect("someone holds the Lease");
    assert_ne!(target, 0);
    assert!(
        stopped.answer.starts_with("handed the primary role"),
        "{}",
        stopped.answer
    );
    assert_eq!(missing_on(&release, target, &behind), Vec::<String>::new());
    write(&release, "after").await;
    release.nodes[0].with_state(|s| s.refuse_replication = false);
    assert!(
        eventually(WAIT, || release.settled_on(target)).await,
        "{:?}",
        release.readyz(0).await
    );
    // Nothing was lost, so the old primary is no diverged database: it follows.
    assert!(eventually(WAIT, || async { holds(&release.nodes[0], "after") }).await);
    assert_eq!(release.transitions(), 1);
    no_failover(&release).await;
    release.no_two_primaries();
}

/// Waits in the background until `node`'s appdb is fenced (read-only), then runs `then`.
fn when_fenced(release: &Release, node: u8, then: impl FnOnce() + Send + 'static) {
    let state = release.nodes[node as usize].state.clone();
    tokio::spawn(async move {
        loop {
            let fenced = state
                .lock()
                .unwrap()
                .databases
                .get("appdb")
                .is_some_and(|db| db.replication.replica);
            if fenced {
                then();
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

#[tokio::test]
async fn a_hand_over_whose_target_dies_halfway_falls_back_to_keeping_the_lease() {
    let mut release = release(sync_spec(), &[]).await;
    // read-1 is not Ready (its agent is gone; it still replicates): read-0 is the target.
    release.agents[2] = None;
    assert!(eventually(WAIT, || async { !release.kube.ready(NS, &pod_name(2)) }).await);
    let writer = Writer::start(&release);
    assert!(eventually(WAIT, || async { writer.count() > 10 }).await);
    // Once the primary has fenced itself, read-0's agent loses the API: it never takes the
    // Lease that is handed to it.
    let kube = release.kube.handle();
    when_fenced(&release, 0, move || kube.cut_off("token-1", true));
    let stopped = release.restart(0).await;
    assert!(
        stopped.answer.starts_with("kept the primary role"),
        "{}",
        stopped.answer
    );
    assert_eq!(stopped.metric(KEPT_ROLE), Some(1.0), "{}", stopped.metrics);
    assert_eq!(stopped.metric(HANDED_OVER), Some(0.0));
    let target = release.agents[1].as_ref().expect("read-0's agent runs");
    assert_eq!(target.metric(RECEIVED).await, Some(0.0));
    // As without a hand-over: the pod came back within the Lease and holds it.
    release.kube.cut_off("token-1", false);
    release.agents[2] = Some(release.agent(2));
    assert!(
        eventually(WAIT, || release.settled_on(0)).await,
        "{:?}",
        release.readyz(1).await
    );
    let before = writer.count();
    assert!(eventually(WAIT, || async { writer.count() > before + 10 }).await);
    // It moved and came back: two transitions, neither a failover.
    assert_eq!(release.transitions(), 2);
    nothing_lost_and_no_failover(&release, writer, 0).await;
}

#[tokio::test]
async fn a_primary_killed_during_its_hand_over_is_replaced_by_a_failover_losing_nothing() {
    let mut release = release(sync_spec(), &[]).await;
    let writer = Writer::start(&release);
    assert!(eventually(WAIT, || async { writer.count() > 10 }).await);
    // Its node is lost the moment it fences itself: immudb and the API out of reach.
    let state = release.nodes[0].state.clone();
    let faults = release.nodes[0].faults.clone();
    let kube = release.kube.handle();
    when_fenced(&release, 0, move || {
        immudb_double::set_stopped(&state, &faults, true);
        kube.cut_off("token-0", true);
    });
    let stopping = release.begin_stop(0);
    let elected = new_primary_elected(&release).await;
    release.lose(0);
    stopping.abort();
    assert!(eventually(WAIT, || async { writer.count() > 20 }).await);
    let agent = release.agents[elected as usize].as_ref().unwrap();
    assert_eq!(
        agent.metric("immudb_agent_failovers_total").await,
        Some(1.0),
        "a normal failover"
    );
    let (acknowledged, _) = writer.stop();
    assert_eq!(
        missing_on(&release, elected, &acknowledged),
        Vec::<String>::new()
    );
    release.no_two_primaries();
}

#[tokio::test]
async fn a_stopping_replica_leaves_the_read_service_while_its_immudb_still_serves() {
    let release = release(sync_spec(), &["--drain=2s"]).await;
    write(&release, "probe").await;
    assert!(eventually(WAIT, || async { holds(&release.nodes[2], "probe") }).await);
    let ip = release.cluster.host(2);
    assert!(release
        .kube
        .selected_ips(NS, "immudb/role", "replica")
        .contains(&ip));
    let reader = Client::new(&target(&release.nodes[2]))
        .unwrap()
        .open_session(&admin(), "appdb")
        .await
        .unwrap();
    let hook = release.begin_stop(2);
    assert!(
        eventually(WAIT, || async {
            let (status, body) = release.readyz(2).await;
            status == 503 && body.starts_with("stopping: ")
        })
        .await
    );
    assert!(!hook.is_finished(), "the hook answers after the drain");
    assert!(!release
        .kube
        .selected_ips(NS, "immudb/role", "replica")
        .contains(&ip));
    assert!(eventually(WAIT, || async { !release.kube.ready(NS, &pod_name(2)) }).await);
    // A client still connected reads on until immudb stops.
    assert_eq!(reader.get(b"probe").await.unwrap(), b"probe");
    let stopped = hook.await.unwrap();
    assert_eq!(
        stopped.answer.trim(),
        "drained for 2000 ms: the pod may stop"
    );
}

#[tokio::test]
async fn restarting_the_replicas_never_fails_two_reads_in_a_row() {
    let mut release = release(sync_spec(), &[]).await;
    write(&release, "probe").await;
    assert!(
        eventually(WAIT, || async {
            release.nodes[1..].iter().all(|n| holds(n, "probe"))
        })
        .await
    );
    let reader = Reader::start(&release, "probe");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // kubectl rollout restart of the replicas' StatefulSet: one at a time, each drained.
    let stopped = release.roll(&[StatefulSet::Read], None).await;
    for replica in &stopped {
        assert!(replica.answer.starts_with("drained"), "{}", replica.answer);
    }
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (reads, failed, in_a_row) = reader.stop();
    assert!(reads > 100, "{reads} reads");
    assert!(
        in_a_row <= 1,
        "{in_a_row} reads failed in a row ({failed} of {reads})"
    );
    assert_eq!(release.transitions(), 0, "replicas never move the role");
    eprintln!("{reads} reads, {failed} failed, at most {in_a_row} in a row");
}

/// The release's pods run their StatefulSets' new revision and are Ready, the holder included.
async fn rolled_and_settled(release: &Release) -> u8 {
    let holder = holder_node(release).expect("someone holds the Lease");
    assert!(
        eventually(WAIT, || release.settled_on(holder)).await,
        "{:?}",
        release.kube.lease(NS, LEASE)
    );
    holder
}

#[tokio::test]
async fn a_helm_upgrade_moves_the_role_once_whichever_statefulset_the_primary_is_in() {
    let mut release = release(sync_spec(), &[]).await;
    let writer = Writer::start(&release);
    assert!(eventually(WAIT, || async { writer.count() > 10 }).await);
    // Both StatefulSets get a new template and roll at once; the primary is primary-0.
    let stopped = release
        .roll(&[StatefulSet::Primary, StatefulSet::Read], None)
        .await;
    assert_eq!(stopped.len(), 3);
    let first = rolled_and_settled(&release).await;
    assert_ne!(first, 0);
    assert_eq!(release.transitions(), 1, "the role moved once");
    let primary_0 = stopped.iter().find(|s| s.node == 0).unwrap();
    assert_eq!(primary_0.metric(HANDED_OVER), Some(1.0));
    // The next upgrade: now the primary is a pod of the replicas' StatefulSet.
    let stopped = release
        .roll(&[StatefulSet::Primary, StatefulSet::Read], None)
        .await;
    let second = rolled_and_settled(&release).await;
    assert_ne!(second, first);
    assert_eq!(release.transitions(), 2, "the role moved once more");
    let handed: f64 = stopped.iter().filter_map(|s| s.metric(HANDED_OVER)).sum();
    assert_eq!(handed, 1.0);
    nothing_lost_and_no_failover(&release, writer, second).await;
}

#[tokio::test]
async fn an_upgrade_to_another_immudb_version_does_not_deadlock_and_moves_the_role_once() {
    let mut release = release(sync_spec(), &[]).await;
    // First move the role into the replicas' StatefulSet, where a rollout reaches the primary
    // only after the pods above it: the case that could wait for ever.
    release.roll(&[StatefulSet::Primary], None).await;
    let first = rolled_and_settled(&release).await;
    assert_eq!(first, 1, "read-0, the lowest name");
    let writer = Writer::start(&release);
    assert!(eventually(WAIT, || async { writer.count() > 10 }).await);
    // helm upgrade to an image with another immudb version. The replicas' controller has not
    // reached a pod yet; primary-0 restarts on the new version, cannot follow the old primary
    // and is not Ready, while read-1 (old version) still acknowledges writes that primary-0
    // then lacks. The primary, whose own pod is due for a restart, hands over to it at once,
    // copying across versions what it lacks; primary-0 serves, and the rollout goes on.
    // (primary-0 runs the new version a little earlier: it stops replicating for good and lacks
    // what read-1 acknowledges meanwhile.)
    release.nodes[0].with_state(|s| s.version = "1.11.2".into());
    let lacking = writer.count();
    assert!(eventually(WAIT, || async { writer.count() > lacking + 5 }).await);
    let acknowledged_meanwhile = writer.keys().split_off(lacking);
    assert!(!holds(&release.nodes[0], &acknowledged_meanwhile[0]));
    release.new_template(StatefulSet::Read);
    release.roll(&[StatefulSet::Primary], Some("1.11.2")).await;
    assert_eq!(
        missing_on(&release, 0, &acknowledged_meanwhile),
        Vec::<String>::new(),
        "copied across versions"
    );
    assert_eq!(holder_node(&release), Some(0));
    assert_eq!(release.transitions(), 2, "one more move for the upgrade");
    let before = writer.count();
    release.roll(&[StatefulSet::Read], Some("1.11.2")).await;
    let second = rolled_and_settled(&release).await;
    assert_eq!(second, 0, "no further move");
    assert_eq!(release.transitions(), 2);
    for node in &release.nodes {
        assert_eq!(node.with_state(|s| s.version.clone()), "1.11.2");
    }
    assert!(eventually(WAIT, || async { writer.count() > before + 10 }).await);
    nothing_lost_and_no_failover(&release, writer, second).await;
}

//! One kind of session for the whole binary (`session::Session`): opened once and shared,
//! reopened once per loss, always closed, also when dropped; and the agent, which keeps one
//! session per server across polls, however often immudb refuses its calls, and waits longer
//! after each refused poll.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::future::join_all;
use immudb_double::Node;
use immudb_hook::client::Client;
use immudb_hook::session::{Bound, Session};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Status;

const WAIT: Duration = Duration::from_secs(20);

/// (opened, closed with CloseSession, open now) on `node`.
fn sessions(node: &Node) -> (u64, u64, usize) {
    node.with_state(|s| (s.sessions_opened, s.sessions_closed, s.session_count()))
}

/// Watches how many sessions a node holds, every millisecond, until asked for the most it saw.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: JoinHandle<usize>,
}

impl Sampler {
    fn start(node: &Node) -> Sampler {
        let state = node.state.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut most = 0;
            while !stopped.load(Ordering::SeqCst) {
                most = most.max(state.lock().unwrap().session_count());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            most
        });
        Sampler { stop, task }
    }

    async fn most(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// Runs a replica agent polling every 5 ms on `nodes` (primary, replica) while the replica's
/// immudb refuses every `rpc` call, until `polls` polls (its /readyz then says `unready`); then
/// checks that each server held one session of the agent at most, that every other session it
/// opened was closed, and that stopping the agent closes the last ones.
async fn one_session_per_server_across_refused_polls(
    cluster: &Cluster,
    nodes: &[Node],
    rpc: &'static str,
    polls: f64,
    unready: &str,
) {
    let refusal = Status::unknown(format!("injected: {rpc} refused"));
    nodes[1].faults.refuse(rpc, Some(refusal));
    let before: Vec<u64> = nodes.iter().map(|n| sessions(n).0).collect();
    let samplers: Vec<Sampler> = nodes.iter().map(Sampler::start).collect();
    let agent = cluster.agent(
        1,
        &cluster.replica_hosts(1),
        databases(&["appdb"]),
        &["--poll-interval=5ms"],
    );
    assert!(
        eventually(Duration::from_secs(120), || async {
            agent.metric("immudb_agent_polls_total").await >= Some(polls)
        })
        .await,
        "{polls} polls: {:?}",
        agent.get("/metrics").await
    );
    let (_, readyz) = agent.get("/readyz").await;
    assert!(readyz.contains(unready), "{readyz}");
    let mut most = Vec::new();
    for sampler in samplers {
        most.push(sampler.most().await);
    }
    assert_eq!(
        most,
        vec![1, 1],
        "sessions held at once, (primary, replica)"
    );
    assert_eq!(
        agent.metric("immudb_agent_logins_total").await,
        Some(2.0),
        "one login on each server"
    );
    for (node, before) in nodes.iter().zip(before) {
        let (opened, closed, open) = sessions(node);
        assert_eq!(open, 1);
        assert_eq!(opened - before, 1, "one session opened by the agent");
        assert_eq!(
            opened - closed,
            1,
            "every session but the agent's current one was closed"
        );
    }
    drop(agent);
    assert!(
        eventually(WAIT, || async { nodes.iter().all(|n| sessions(n).2 == 0) }).await,
        "a stopped agent closes its sessions: {:?}",
        nodes.iter().map(sessions).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_agent_whose_every_poll_fails_on_a_refused_call_keeps_one_session_per_server() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    let report = converge_databases(&cluster, &cluster.replica_hosts(1), &["appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    // Each poll reaches the primary, then fails on its first call to the local immudb.
    one_session_per_server_across_refused_polls(
        &cluster,
        &nodes,
        "DatabaseListV2",
        1000.0,
        "injected: DatabaseListV2 refused",
    )
    .await;
}

#[tokio::test]
async fn an_agent_whose_repair_immudb_refuses_keeps_one_session_per_server() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    // Only the primary is converged: every poll of the replica's agent plans to create appdb.
    let report = converge_databases(&cluster, &[], &["appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    one_session_per_server_across_refused_polls(
        &cluster,
        &nodes,
        "CreateDatabaseV2",
        300.0,
        "database 'appdb' is missing",
    )
    .await;
    assert!(nodes[1].with_state(|s| !s.databases.contains_key("appdb")));
}

/// Every change of the agent's poll counter within `window`, as seconds since it started.
async fn poll_times(agent: &RunningAgent, window: Duration) -> Vec<f64> {
    let started = Instant::now();
    let (mut times, mut seen) = (Vec::new(), 0.0);
    while started.elapsed() < window {
        let polls = agent
            .metric("immudb_agent_polls_total")
            .await
            .unwrap_or(0.0);
        if polls > seen {
            times.push(started.elapsed().as_secs_f64());
            seen = polls;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times
}

#[tokio::test]
async fn a_refused_poll_is_retried_ever_later_up_to_the_poll_interval() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    let report = converge_databases(&cluster, &cluster.replica_hosts(1), &["appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    nodes[1]
        .faults
        .refuse("DatabaseListV2", Some(Status::unknown("injected: refused")));
    let timings = ["--poll-interval=2s", "--max-lag=10s"];
    let refused = cluster.agent(
        1,
        &cluster.replica_hosts(1),
        databases(&["appdb"]),
        &timings,
    );
    // Node 2 has no immudb at all: nothing answers its agent.
    let silent = cluster.agent(
        2,
        &cluster.replica_hosts(2),
        databases(&["appdb"]),
        &timings,
    );
    let (refused, silent) = tokio::join!(
        poll_times(&refused, Duration::from_secs(7)),
        poll_times(&silent, Duration::from_secs(3))
    );
    // Expected: polls at about 0, 0.25, 0.75, 1.75, 3.75 and 5.75 s (waits of 250 ms doubling
    // up to the 2 s poll interval); a fixed 250 ms loop would poll about 28 times.
    assert!((5..=8).contains(&refused.len()), "polls at {refused:?} s");
    assert!(
        refused.iter().filter(|t| **t < 1.2).count() >= 2,
        "the first retry comes soon: {refused:?}"
    );
    let gaps: Vec<f64> = refused.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] >= g[0] - 0.15),
        "each wait at least as long as the one before: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g < 2.6) && gaps.last() > Some(&1.5),
        "the waits grow up to the poll interval and stay there: {gaps:?}"
    );
    // While nothing answers, polls stay every 250 ms: a returning former primary is fenced
    // within one poll of its immudb answering.
    assert!(silent.len() >= 8, "polls at {silent:?} s");
}

#[tokio::test]
async fn a_session_dropped_open_is_closed_on_the_server() {
    let cluster = Cluster::new();
    let node = cluster.start_node(0).await;
    let server = Client::new(&target(&node)).unwrap();
    let bound = Bound::EachCall(SHORT);
    let session = Session::open(&server, &admin(), "defaultdb", bound)
        .await
        .unwrap();
    let listed = session
        .call("list", |c| async move { c.list_databases().await })
        .await;
    assert!(listed.is_ok(), "{listed:?}");
    assert_eq!(sessions(&node), (1, 0, 1));
    drop(session);
    assert!(
        eventually(SHORT, || async { sessions(&node) == (1, 1, 0) }).await,
        "{:?}",
        sessions(&node)
    );

    // close() closes at once; the closed session's drop sends nothing more.
    let session = Session::open(&server, &admin(), "defaultdb", bound)
        .await
        .unwrap();
    session.close().await;
    assert_eq!(sessions(&node), (2, 2, 0));
    drop(session);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sessions(&node), (2, 2, 0));
}

#[tokio::test]
async fn a_session_the_server_lost_is_reopened_once_for_many_concurrent_calls() {
    let cluster = Cluster::new();
    let node = cluster.start_node(0).await;
    let server = Client::new(&target(&node)).unwrap();
    for bound in [Bound::EachCall(SHORT), Bound::Once] {
        let (opened, _, _) = sessions(&node);
        let session = Session::new(&server, &admin(), &["defaultdb".into()], bound);
        let list = || session.call("list", |c| async move { c.list_databases().await });
        assert!(list().await.is_ok());
        node.with_state(|s| s.lose_sessions());
        let calls = join_all((0..20).map(|_| list())).await;
        assert!(calls.iter().all(Result::is_ok), "{bound:?}: {calls:?}");
        assert_eq!(
            sessions(&node).0 - opened,
            2,
            "{bound:?}: one login, and one for the loss however many calls saw it"
        );
        session.close().await;
        assert_eq!(sessions(&node).2, 0);
    }
}

/// A server that stopped (SIGSTOP, a frozen VM) neither fails nor answers: a link bounded with
/// `within` ends the call at its limit instead of each RPC's own timeout (10 s), drops the
/// session, and logs in again once the server answers.
#[tokio::test]
async fn a_call_to_a_stopped_server_ends_at_the_links_limit_and_the_next_one_logs_in_again() {
    use immudb_hook::link::{Dial, Link};
    use immudb_hook::session::Logins;
    let cluster = Cluster::new();
    let node = cluster.start_node(0).await;
    let topology = cluster
        .cli(&[], 20, "verify", &["--database=appdb"])
        .topology
        .topology()
        .unwrap();
    let logins = Logins::default();
    let mut link = Link::new(
        &cluster.host(0),
        Dial::Fixed(cluster.ip(0)),
        &topology,
        &logins,
    )
    .within(Duration::from_millis(300));
    let defaultdb = ["defaultdb".to_string()];
    let list = |c: Client| async move { c.list_databases().await };
    assert!(link.call(&admin(), &defaultdb, list).await.is_ok());
    node.pause(true);
    let stopped = tokio::time::timeout(SHORT, link.call(&admin(), &defaultdb, list))
        .await
        .expect("the call ends though the server never answers");
    assert_eq!(stopped.unwrap_err().code, tonic::Code::DeadlineExceeded);
    node.pause(false);
    assert!(link.call(&admin(), &defaultdb, list).await.is_ok());
    assert_eq!(
        logins.count(),
        2,
        "the session was dropped and opened again"
    );
}

//! A primary paused past the lease (SIGSTOP, a long GC pause, a frozen VM: the whole pod
//! stopped, its connections kept open), then resumed. The danger is real immudb's: a synchronous
//! replica's replicator keeps its stream to the server it reached through the write Service, so
//! a stream to the stopped pod hangs instead of failing, and continues with it when it resumes,
//! acknowledging its writes, unless the failover ends it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::release::*;
use common::*;
use immudb_hook::client::Client;

/// Calls to a stopped pod wait rather than fail: an agent's call to it ends after a poll interval
/// (at least 1 s), and so does an election's question, so a failover away from a paused primary
/// takes longer than one away from a lost node.
const PAUSED_WAIT: Duration = Duration::from_secs(60);

fn appdb_is_replica(node: &immudb_double::Node) -> bool {
    node.with_state(|s| s.databases["appdb"].replication.replica)
}

#[tokio::test]
async fn a_paused_primary_acknowledges_nothing_after_it_resumes_and_rejoins() {
    let harness = Harness {
        processes: vec![0],
        // The chart's kubelet needs 3 failed probes 10 s apart, longer than the lease: the
        // stopped pod is still Ready when another pod takes over.
        probe_failure_threshold: 1000,
    };
    let release =
        Release::start_harnessed("1h", sync_spec(), &[], REPLICA_COUNT + 1, harness).await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let key = format!("before-{i}");
        write(&release, &key).await;
        acknowledged.push(key);
    }
    // A client connected straight to the primary's pod, not through the Service.
    let direct = Client::new(&target(&release.nodes[0]))
        .unwrap()
        .open_session(&admin(), "appdb")
        .await
        .unwrap();

    // The whole pod stops, immudb and agent, for longer than the lease.
    release.nodes[0].pause(true);
    release.agents[0].as_ref().unwrap().signal("STOP");
    let elected = new_primary_elected_within(&release, PAUSED_WAIT).await;
    let other = 3 - elected;
    // The new primary's writes are acknowledged: the other replica follows it, not the stopped
    // pod its stream reached before.
    write_within(&release, "after-failover", PAUSED_WAIT).await;
    acknowledged.push("after-failover".into());

    // The pod resumes: immudb first and the client writes at once; the agent runs a moment
    // later (a thawed pod's threads run in any order, and its first poll waits for the API):
    // no acknowledgement may depend on the agent fencing first.
    release.nodes[0].pause(false);
    let after_resume = tokio::spawn(async move {
        let set = direct.set(b"written-after-resume", b"x");
        tokio::time::timeout(Duration::from_secs(2), set).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.agents[0].as_ref().unwrap().signal("CONT");
    let answer = after_resume.await.unwrap();
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "the resumed primary acknowledged a write: {answer:?}; on the new primary: {}",
        holds(&release.nodes[elected as usize], "written-after-resume")
    );

    // Its agent fences it, and it rejoins as a replica of the new primary holding every
    // acknowledged write; the write nobody acknowledged is discarded.
    assert!(eventually(WAIT, || async { appdb_is_replica(&release.nodes[0]) }).await);
    assert!(
        eventually(PAUSED_WAIT, || release.settled_on(elected)).await,
        "{:?}",
        release.readyz(0).await
    );
    write(&release, "after-rejoin").await;
    acknowledged.push("after-rejoin".into());
    for node in [0, elected, other] {
        let node = &release.nodes[node as usize];
        let all = || async { acknowledged.iter().all(|k| holds(node, k)) };
        assert!(
            eventually(WAIT, all).await,
            "an acknowledged write is missing"
        );
        assert!(!holds(node, "written-after-resume"));
    }
    let refused = Client::new(&target(&release.nodes[0]))
        .unwrap()
        .open_session(&admin(), "appdb")
        .await
        .unwrap()
        .set(b"direct", b"x")
        .await
        .unwrap_err();
    assert_eq!(
        refused.message,
        "database is read-only because it's a replica"
    );
    assert_eq!(release.transitions(), 1);
    release.no_two_primaries();
}

/// Only the primary's agent stops (a long GC pause of its own) past its fence time, not the
/// lease: when it resumes, the verdict of its last poll no longer holds. It answers not Ready at
/// once and makes its databases read-only before it asks the API anything (the API answers
/// slowly here); the Lease is still its own, so it renews it and serves again: no failover.
#[tokio::test]
async fn a_primary_agent_resumed_past_its_fence_time_stops_serving_before_it_asks_the_api() {
    // A poll every second, a 4 s lease: the fence is due 2.5 s after a renew (4 s less a poll
    // and half a poll for the API call).
    let harness = Harness {
        processes: vec![0],
        ..Harness::default()
    };
    let flags = ["--poll-interval=1s", "--lease-duration=4s"];
    let release =
        Release::start_harnessed("1h", sync_spec(), &flags, REPLICA_COUNT + 1, harness).await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    write(&release, "before").await;
    let fenced = Arc::new(AtomicBool::new(false));
    let (seen, state) = (fenced.clone(), release.nodes[0].state.clone());
    tokio::spawn(async move {
        loop {
            if state.lock().unwrap().databases["appdb"].replication.replica {
                seen.store(true, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });

    let agent = release.agents[0].as_ref().unwrap();
    agent.signal("STOP");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    release
        .kube
        .delay("token-0", Some(Duration::from_millis(150)));
    agent.signal("CONT");
    let (status, body) = agent.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not renewed in time"), "{body}");
    assert!(
        eventually(WAIT, || async { fenced.load(Ordering::SeqCst) }).await,
        "the databases were never read-only"
    );
    release.kube.delay("token-0", None);
    assert!(
        eventually(WAIT, || release.settled_on(0)).await,
        "{:?}",
        release.readyz(0).await
    );
    write(&release, "after").await;
    assert_eq!(release.transitions(), 0, "no failover");
    release.no_two_primaries();
}

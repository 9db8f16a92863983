//! Benchmarks the release agent (`immudb-hook agent`) against doubles: the cost of one poll of a
//! replica with 10 replicated databases (wall time, CPU time, logins) and its peak RSS; the time
//! from a new replica's start to Ready; and the sessions agents hold on each server while they
//! poll, healthy and while immudb refuses their calls. Prints a BENCHMARKS.md section on stdout.
//! Usage: agent-bench <path to immudb-hook>

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use immudb_double::{Network, Node};
use tokio::task::JoinHandle;

mod support;

const DATABASES: usize = 10;
const AGENT_PORT: u16 = 9498;

fn ip(subnet: u8, node: u8) -> IpAddr {
    support::ip(78, subnet, node)
}

async fn start(network: &Network, subnet: u8, node: u8) -> Node {
    let options = support::node_options(ip(subnet, node), "bench-admin");
    Node::start(options, network).await.expect("start double")
}

fn hook(hook: &str, dir: &Path, subnet: u8, replicas: u8) -> tokio::process::Command {
    let hosts: Vec<IpAddr> = (1..=replicas).map(|n| ip(subnet, n)).collect();
    support::hook_command(hook, dir, ip(subnet, 0), &hosts)
}

/// Starts the agent of `node` (0 is the primary) in a cluster of `replicas` replicas, polling
/// every `interval`.
fn agent(
    hook_path: &str,
    dir: &Path,
    subnet: u8,
    (node, replicas): (u8, u8),
    interval: &str,
) -> tokio::process::Child {
    let role = if node == 0 { "primary" } else { "replica" };
    let mut command = hook(hook_path, dir, subnet, replicas);
    command
        .arg("agent")
        .arg(format!("--role={role}"))
        .arg(format!(
            "--listen={}",
            SocketAddr::new(ip(subnet, node), AGENT_PORT)
        ))
        .arg(format!("--local-address={}", ip(subnet, node)))
        .arg(format!("--poll-interval={interval}"))
        .kill_on_drop(true);
    command.spawn().expect("start the agent")
}

async fn converge(hook_path: &str, dir: &Path, subnet: u8, replicas: u8) {
    let status = hook(hook_path, dir, subnet, replicas)
        .arg("converge")
        .status()
        .await
        .expect("run converge");
    assert!(status.success(), "converge failed");
}

#[tokio::main]
async fn main() {
    let hook_path = std::env::args()
        .nth(1)
        .expect("usage: agent-bench <path to immudb-hook>");
    let dir = std::env::temp_dir().join(format!("agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin"), "bench-admin").unwrap();
    std::fs::write(dir.join("replication"), "bench-replication").unwrap();
    let names: Vec<String> = (0..DATABASES).map(|i| format!("db{i}")).collect();
    let spec = format!("{{\"databases\": {names:?}}}");
    std::fs::write(dir.join("spec.json"), spec).unwrap();
    let network = Network::default();

    println!("\n## Agent\n");
    println!(
        "`make bench`: the release agent on a replica with {DATABASES} replicated databases, against the immudb double on loopback (2 cores).\n"
    );

    // Poll cost: 10 s of polls every 200 ms on a converged replica.
    let nodes = [start(&network, 1, 0).await, start(&network, 1, 1).await];
    converge(&hook_path, &dir, 1, 1).await;
    let mut child = agent(&hook_path, &dir, 1, (1, 1), "200ms");
    let pid = child.id().expect("agent pid");
    let metrics_url = format!("{}/metrics", SocketAddr::new(ip(1, 1), AGENT_PORT));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu_before, _) = support::usage(pid);
    let polls_before = support::get(&metrics_url).await.map_or(f64::NAN, |(_, b)| {
        support::metric(&b, "immudb_agent_polls_total")
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (cpu_after, peak_kib) = support::usage(pid);
    let body = support::get(&metrics_url)
        .await
        .map(|(_, b)| b)
        .unwrap_or_default();
    let polls = support::metric(&body, "immudb_agent_polls_total") - polls_before;
    println!("| measure | value |\n| --- | --- |");
    println!("| polls measured | {polls:.0} |");
    println!(
        "| wall time of the last poll | {:.1} ms |",
        support::metric(&body, "immudb_agent_poll_duration_seconds") * 1000.0
    );
    println!(
        "| CPU time per poll (user + system) | {:.2} ms |",
        (cpu_after - cpu_before) * 1000.0 / polls
    );
    println!(
        "| logins over {:.0} polls | {:.0} (one local, one on the primary) |",
        support::metric(&body, "immudb_agent_polls_total"),
        support::metric(&body, "immudb_agent_logins_total")
    );
    println!("| peak RSS (VmHWM) | {:.1} MB |", peak_kib as f64 / 1024.0);
    let _ = child.kill().await;
    drop(nodes);

    // A new replica's start → Ready: the primary converged with 100 transactions per database;
    // the replica and its agent start together (no Job runs); three trials per poll interval.
    println!("\nNew replica start → Ready (the agent creates {DATABASES} replica databases, they catch up 100 transactions each):\n");
    println!("| poll interval | trials (s) |\n| --- | --- |");
    let mut subnet = 2;
    for interval in ["1s", "5s"] {
        let mut trials = Vec::new();
        for _ in 0..3 {
            let primary = start(&network, subnet, 0).await;
            converge(&hook_path, &dir, subnet, 0).await;
            primary.with_state(|s| {
                for db in s.databases.values_mut() {
                    for i in 0..100u8 {
                        db.ledger.commit(&[(vec![i], vec![i])]);
                    }
                }
            });
            let started = Instant::now();
            let _replica = start(&network, subnet, 1).await;
            let mut child = agent(&hook_path, &dir, subnet, (1, 1), interval);
            let ready_url = format!("{}/readyz", SocketAddr::new(ip(subnet, 1), AGENT_PORT));
            while support::get(&ready_url).await.map(|(s, _)| s) != Some(200) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            trials.push(format!("{:.2}", started.elapsed().as_secs_f64()));
            let _ = child.kill().await;
            subnet += 1;
        }
        println!("| {interval} | {} |", trials.join(", "));
    }
    println!("\nReady takes two polls at least: the first creates the databases, a later one sees them caught up.");
    sessions_per_agent(&hook_path, &dir, &network, subnet).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The most sessions a node's table held while the sampler ran, sampled every millisecond.
fn sample_sessions(node: &Node, stop: &Arc<AtomicBool>) -> JoinHandle<usize> {
    let (state, stop) = (node.state.clone(), stop.clone());
    tokio::spawn(async move {
        let mut most = 0;
        while !stop.load(Ordering::SeqCst) {
            most = most.max(state.lock().expect("state").session_count());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        most
    })
}

/// A primary and two replicas with an agent beside each, polling every 200 ms: the sessions on
/// every server and the logins over 10 s, healthy, then with every replica's immudb refusing the
/// first call of each of its agent's polls.
async fn sessions_per_agent(hook_path: &str, dir: &Path, network: &Network, subnet: u8) {
    const WINDOW: Duration = Duration::from_secs(10);
    let nodes = [
        start(network, subnet, 0).await,
        start(network, subnet, 1).await,
        start(network, subnet, 2).await,
    ];
    converge(hook_path, dir, subnet, 2).await;
    let mut children: Vec<_> = (0..3)
        .map(|node| agent(hook_path, dir, subnet, (node, 2), "200ms"))
        .collect();
    let url =
        |node: u8, path: &str| format!("{}{path}", SocketAddr::new(ip(subnet, node), AGENT_PORT));
    for node in 0..3 {
        while support::get(&url(node, "/readyz")).await.map(|(s, _)| s) != Some(200) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let logins = || async {
        let mut total = 0.0;
        for node in 0..3 {
            let body = support::get(&url(node, "/metrics"))
                .await
                .map(|(_, b)| b)
                .unwrap_or_default();
            total += support::metric(&body, "immudb_agent_logins_total");
        }
        total
    };
    println!("\nSessions open per agent: a primary and 2 replicas with 10 databases, an agent beside each polling every 200 ms; every server's session table sampled each millisecond for {} s:\n", WINDOW.as_secs());
    println!("| immudb | most sessions on the primary | most on a replica | logins in {} s (3 agents) | logins per hour |\n| --- | --- | --- | --- | --- |", WINDOW.as_secs());
    for refused in [false, true] {
        if refused {
            for replica in &nodes[1..] {
                let refusal = tonic::Status::unknown("refused by the bench");
                replica.faults.refuse("DatabaseListV2", Some(refusal));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let before = logins().await;
        let stop = Arc::new(AtomicBool::new(false));
        let samplers: Vec<_> = nodes.iter().map(|n| sample_sessions(n, &stop)).collect();
        tokio::time::sleep(WINDOW).await;
        stop.store(true, Ordering::SeqCst);
        let mut most = Vec::new();
        for sampler in samplers {
            most.push(sampler.await.expect("sampler"));
        }
        let made = logins().await - before;
        let label = if refused {
            "answers; every replica refuses its agent's first call of each poll"
        } else {
            "answers every call"
        };
        println!(
            "| {label} | {} | {} | {made:.0} | {:.0} |",
            most[0],
            most[1].max(most[2]),
            made * 3600.0 / WINDOW.as_secs_f64()
        );
    }
    println!("\nOn the primary: its own agent's session and one of each replica's agent (the replication user's); on a replica, its agent's. A refused call keeps the session: the agent logs in again only after the server lost it or stopped answering.");
    for child in &mut children {
        let _ = child.kill().await;
    }
}

//! Benchmarks a planned restart of the primary (`kubectl rollout restart`, a helm upgrade, a
//! drain): the longest time between two acknowledged writes of a client that writes through the
//! write Service all the time and reconnects 0.1 s after a failed write, with failover (the
//! preStop hook hands the role over first) and without (the pod restarts and comes back).
//! The release agent (`immudb-hook agent`, the chart's defaults) against doubles whose
//! replicators back off with immudb's own timing, sync acks 1, two replicas; the kubelet runs the
//! preStop hook, stops immudb, keeps it down `DOWN`, then starts it and its agent again, and
//! probes as fast as the doubles allow or every 10 s as the chart's probes do. Prints a
//! BENCHMARKS.md section. Usage: switchover-bench <path to immudb-hook>

use std::net::IpAddr;
use std::time::Duration;

use immudb_double::replicator::Backoff;
use immudb_double::Network;

mod support;

use support::release::{add_pod, pod, Probes, Release, Writer, ADMIN, AGENT_PORT, NS};

/// This bench's addresses: 127.75.x.y.
const BENCH: u8 = 75;
/// How long immudb is down while its pod restarts (container stop and start).
const DOWN: Duration = Duration::from_secs(1);
/// The client's wait before it connects again after a failed write.
const RECONNECT: Duration = Duration::from_millis(100);
const TRIALS: usize = 3;

fn ip(subnet: u8, node: u8) -> IpAddr {
    support::ip(BENCH, subnet, node)
}

async fn status(ip: IpAddr, path: &str) -> Option<u16> {
    support::get(&format!("{ip}:{AGENT_PORT}{path}"))
        .await
        .map(|(s, _)| s)
}

/// The primary's node: the Lease's holder with failover, the primary StatefulSet's pod without.
fn primary(release: &Release) -> u8 {
    let holder = release.holder();
    (0..3)
        .find(|&n| holder.as_deref() == Some(release.ip(n).to_string().as_str()))
        .unwrap_or(0)
}

/// The kubelet's planned restart of `node`'s pod: the pod terminating, its preStop hook
/// answered, immudb and the agent stopped, the pod recreated, immudb started `DOWN` later.
async fn restart(release: &mut Release, hook: &str, node: u8) {
    release.kube.terminate_pod(NS, &pod(node));
    let ip = release.ip(node);
    support::get(&format!("{ip}:{AGENT_PORT}/prestop")).await;
    release.nodes[node as usize].isolate(true);
    release.agents[node as usize] = None;
    release.kube.remove_pod(NS, &pod(node));
    tokio::time::sleep(DOWN / 2).await;
    add_pod(&release.kube, node, ip);
    tokio::time::sleep(DOWN / 2).await;
    release.nodes[node as usize].isolate(false);
    release.agents[node as usize] = Some(release.agent(hook, node));
}

/// One planned restart of the primary; the longest gap between acknowledged writes.
async fn trial(
    hook: &str,
    dir: &std::path::Path,
    network: &Network,
    subnet: u8,
    failover: bool,
    probes: Probes,
) -> Duration {
    let immudb_backoff = |mut options: immudb_double::NodeOptions| {
        options.replication_retry = Backoff::IMMUDB;
        options
    };
    let lease = failover.then_some(("15s", "2m"));
    let mut release =
        Release::start((BENCH, subnet), network, dir, immudb_backoff, lease, probes).await;
    release.start_agents(hook);
    // Settled: every agent Ready, the write Service writes.
    loop {
        let mut ready = true;
        for n in 0..3 {
            ready &= status(ip(subnet, n), "/readyz").await == Some(200);
        }
        if ready && release.write(b"settled").await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kube = release.kube.handle();
    let route = move || {
        let (key, value) = match failover {
            true => ("immudb/role", "primary"),
            false => ("app.kubernetes.io/component", "primary"),
        };
        kube.selected_ips(NS, key, value).into_iter().next()
    };
    let writer = Writer::start(route, RECONNECT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let node = primary(&release);
    restart(&mut release, hook, node).await;
    let after = writer.count();
    while writer.count() < after + 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer.stop()
}

#[tokio::main]
async fn main() {
    let hook = std::env::args()
        .nth(1)
        .expect("usage: switchover-bench <path to immudb-hook>");
    let dir = std::env::temp_dir().join(format!("switchover-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin"), ADMIN).unwrap();
    std::fs::write(dir.join("replication"), "bench-replication").unwrap();
    let spec = "{\"databases\": [\"db0\"], \"replication\": {\"sync\": {\"enabled\": true, \"acks\": 1}, \"allowTxDiscarding\": true}}";
    std::fs::write(dir.join("spec.json"), spec).unwrap();
    let network = Network::default();

    println!("\n## Planned restarts of the primary\n");
    println!(
        "`make bench`: a planned restart of the primary's pod (the kubelet runs the immudb container's preStop hook, then stops immudb, which is down {} s, and starts it again), the release agent with the chart's defaults (pollInterval 5s, leaseDuration 15s), sync acks 1, two replicas, doubles whose replicators back off as immudb's do, on loopback (2 cores). A client writes through the write Service all the time and connects again {} ms after a failed write; the longest time between two acknowledged writes, {TRIALS} trials each:\n",
        DOWN.as_secs(),
        RECONNECT.as_millis()
    );
    println!("| failover | kubelet probes | longest gap between acknowledged writes (s) |\n| --- | --- | --- |");
    let fast = Probes {
        period: Duration::from_millis(20),
    };
    let chart = Probes {
        period: Duration::from_secs(10),
    };
    let mut subnet = 1;
    for (failover, probes, label) in [
        (true, fast, "every 20 ms"),
        (true, chart, "every 10 s (the chart's)"),
        (false, fast, "every 20 ms"),
        (false, chart, "every 10 s (the chart's)"),
    ] {
        let mut gaps = Vec::new();
        for _ in 0..TRIALS {
            let gap = trial(&hook, &dir, &network, subnet, failover, probes).await;
            gaps.push(format!("{:.2}", gap.as_secs_f64()));
            subnet += 1;
        }
        let name = if failover {
            "on: the role is handed over first"
        } else {
            "off: the pod restarts"
        };
        println!("| {name} | {label} | {} |", gaps.join(", "));
    }
    println!("\nWith failover the gap is the hand-over (fence, copy, the Lease moved, the new primary promoted at once), independent of the kubelet's probes: the new primary's pod is Ready already, as a replica. Without, writes wait until immudb is back and the kubelet's startup and readiness probes pass: with the chart's 10 s periods, up to a period each.");
    let _ = std::fs::remove_dir_all(&dir);
}

//! Benchmarks failover with the release agent (`immudb-hook agent`) against the immudb double and
//! the Kubernetes API double: the time from the primary's loss to the first write the write
//! Service accepts again, and what failover adds to each poll of an agent. Prints a
//! BENCHMARKS.md section on stdout. Usage: failover-bench <path to immudb-hook>

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use immudb_double::Network;

mod support;

use support::release::{pod, Probes, Release, ADMIN, AGENT_PORT, NS};

const DATABASES: usize = 10;
/// This bench's addresses: 127.79.x.y.
const BENCH: u8 = 79;

fn ip(subnet: u8, node: u8) -> IpAddr {
    support::ip(BENCH, subnet, node)
}

/// The kubelet probes every 20 ms: what the bench measures is the agents', not the probes'.
const FAST_PROBES: Probes = Probes {
    period: Duration::from_millis(20),
};

async fn start(
    network: &Network,
    dir: &Path,
    subnet: u8,
    failover: Option<(&str, &str)>,
) -> Release {
    Release::start((BENCH, subnet), network, dir, |o| o, failover, FAST_PROBES).await
}

async fn status(address: &str, path: &str) -> Option<u16> {
    support::get(&format!("{address}{path}"))
        .await
        .map(|(s, _)| s)
}

/// The primary is lost with its pod; returns the seconds until the write Service accepts a write.
async fn failover_trial(
    hook: &str,
    dir: &Path,
    network: &Network,
    subnet: u8,
    (interval, lease_duration): (&str, &str),
) -> f64 {
    let mut release = start(network, dir, subnet, Some((lease_duration, "2m"))).await;
    release.poll_interval = interval.into();
    release.start_agents(hook);
    let primary = ip(subnet, 0).to_string();
    while !(release.holder().as_deref() == Some(primary.as_str()) && release.write(b"before").await)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let both replicas acknowledge and settle into their polling rhythm.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lost = Instant::now();
    release.agents[0] = None;
    release.nodes[0].isolate(true);
    release.kube.remove_pod(NS, &pod(0));
    let mut n = 0u32;
    loop {
        n += 1;
        if release.write(format!("after-{n}").as_bytes()).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lost.elapsed().as_secs_f64()
}

/// CPU per poll and API calls per poll of the primary's and a replica's agent over 10 s.
async fn poll_cost(
    hook: &str,
    dir: &Path,
    network: &Network,
    subnet: u8,
    failover: bool,
) -> [(f64, f64); 2] {
    let mut release = start(network, dir, subnet, failover.then_some(("1s", "2m"))).await;
    release.poll_interval = "200ms".into();
    release.start_agents(hook);
    // Every agent Ready: the databases exist everywhere and replicate.
    for n in 0..3 {
        let url = format!("{}:{AGENT_PORT}", ip(subnet, n));
        while status(&url, "/readyz").await != Some(200) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut result = [(0.0, 0.0); 2];
    for (slot, node) in [(0, 0u8), (1, 1u8)] {
        let pid = release.agents[node as usize]
            .as_ref()
            .and_then(|c| c.id())
            .expect("pid");
        let url = format!("{}:{AGENT_PORT}", ip(subnet, node));
        let polls = |body: Option<(u16, String)>| {
            body.map_or(f64::NAN, |(_, b)| {
                support::metric(&b, "immudb_agent_polls_total")
            })
        };
        let token = format!("token-{node}");
        let calls = || release.kube.calls().iter().filter(|c| c.0 == token).count() as f64;
        let calls_before = calls();
        let (cpu_before, polls_before) = (
            support::usage(pid).0,
            polls(support::get(&format!("{url}/metrics")).await),
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (cpu_after, polls_after) = (
            support::usage(pid).0,
            polls(support::get(&format!("{url}/metrics")).await),
        );
        let n = polls_after - polls_before;
        result[slot] = (
            (cpu_after - cpu_before) * 1000.0 / n,
            (calls() - calls_before) / n,
        );
    }
    result
}

#[tokio::main]
async fn main() {
    let hook = std::env::args()
        .nth(1)
        .expect("usage: failover-bench <path to immudb-hook>");
    let dir = std::env::temp_dir().join(format!("failover-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin"), ADMIN).unwrap();
    std::fs::write(dir.join("replication"), "bench-replication").unwrap();
    let names: Vec<String> = (0..DATABASES).map(|i| format!("db{i}")).collect();
    let spec = format!(
        "{{\"databases\": {names:?}, \"replication\": {{\"sync\": {{\"enabled\": true, \"acks\": 1}}, \"allowTxDiscarding\": true}}}}"
    );
    std::fs::write(dir.join("spec.json"), spec).unwrap();
    let network = Network::default();

    println!("\n## Failover\n");
    println!(
        "`make bench`: the release agent in a primary and two replicas with {DATABASES} databases (sync acks 1), against the immudb double and the Kubernetes API double on loopback (2 cores).\n"
    );
    println!("Primary lost (its immudb, agent and pod gone) → the first write the write Service accepts again:\n");
    println!("| agent.pollInterval / failover.leaseDuration | trials (s) |\n| --- | --- |");
    let mut subnet = 1;
    for (setting, trials, note) in [
        (("5s", "15s"), 2, " (the chart's defaults)"),
        (("1s", "3s"), 3, ""),
    ] {
        let mut seconds = Vec::new();
        for _ in 0..trials {
            seconds.push(format!(
                "{:.1}",
                failover_trial(&hook, &dir, &network, subnet, setting).await
            ));
            subnet += 1;
        }
        println!(
            "| {} / {}{note} | {} |",
            setting.0,
            setting.1,
            seconds.join(", ")
        );
    }
    println!("\nA failover takes the lease duration counted from the last renew an agent saw (up to one poll before the loss), up to one poll until an agent notices, the election (each pod asked what it holds), the promotion, and the kubelet's next readiness probe of the new primary.\n");

    println!("The agent's cost per poll (polls every 200 ms for 10 s, steady state):\n");
    println!("| agent | CPU per poll, failover off | CPU per poll, failover on | Kubernetes API calls per poll |\n| --- | --- | --- | --- |");
    let off = poll_cost(&hook, &dir, &network, subnet, false).await;
    let on = poll_cost(&hook, &dir, &network, subnet + 1, true).await;
    for (i, who) in ["primary (holds the Lease)", "replica"].iter().enumerate() {
        println!(
            "| {who} | {:.2} ms | {:.2} ms | {:.1} |",
            off[i].0, on[i].0, on[i].1
        );
    }
    println!("\nWith failover each agent reads the Lease every poll and the holder also renews it; labels are patched only when a role changes.");
    let _ = std::fs::remove_dir_all(&dir);
}

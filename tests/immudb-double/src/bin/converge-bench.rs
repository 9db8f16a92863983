//! Benchmarks the release hook binary against doubles with 20 ms added to every RPC: convergence
//! time for 1, 8 and 32 replicas, the time from the last replica becoming reachable to the hook's
//! exit, the binary's size and the hook's peak RSS. Prints BENCHMARKS.md on stdout.
//! Usage: converge-bench <path to immudb-hook>

use std::net::IpAddr;
use std::time::{Duration, Instant};

use immudb_double::{Network, Node};

mod support;

const LATENCY: Duration = Duration::from_millis(20);

fn ip(subnet: u8, node: u8) -> IpAddr {
    support::ip(77, subnet, node)
}

async fn start(network: &Network, subnet: u8, node: u8) -> Node {
    let mut options = support::node_options(ip(subnet, node), "bench-admin");
    options.latency = LATENCY;
    Node::start(options, network).await.expect("start double")
}

/// Runs the hook to completion; returns (wall time, exit code, peak RSS of the child in KiB).
async fn run_hook(
    hook: &str,
    dir: &std::path::Path,
    subnet: u8,
    replicas: u8,
) -> (Duration, i32, i64) {
    let hosts: Vec<IpAddr> = (1..=replicas).map(|n| ip(subnet, n)).collect();
    let started = Instant::now();
    let status = support::hook_command(hook, dir, ip(subnet, 0), &hosts)
        .arg("converge")
        .status()
        .await
        .expect("run hook");
    let elapsed = started.elapsed();
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    (elapsed, status.code().unwrap_or(-1), usage.ru_maxrss)
}

#[tokio::main]
async fn main() {
    let hook = std::env::args()
        .nth(1)
        .expect("usage: converge-bench <path to immudb-hook>");
    let dir = std::env::temp_dir().join(format!("converge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin"), "bench-admin").unwrap();
    std::fs::write(dir.join("replication"), "bench-replication").unwrap();
    std::fs::write(dir.join("spec.json"), r#"{"databases": ["appdb"]}"#).unwrap();
    let network = Network::default();

    println!("# Benchmarks\n");
    println!("`make bench`: the release hook against the immudb double with {} ms added to every RPC, on loopback (2 cores).\n", LATENCY.as_millis());
    println!("| replicas | convergence (s) | exit |\n| --- | --- | --- |");
    let mut times = Vec::new();
    let mut peak_rss = 0;
    for (subnet, replicas) in [(1u8, 1u8), (2, 8), (3, 32)] {
        let mut nodes = Vec::new();
        for n in 0..=replicas {
            nodes.push(start(&network, subnet, n).await);
        }
        let (elapsed, code, rss) = run_hook(&hook, &dir, subnet, replicas).await;
        peak_rss = rss;
        times.push(elapsed);
        println!("| {replicas} | {:.3} | {code} |", elapsed.as_secs_f64());
    }
    println!(
        "\n32 replicas / 1 replica: {:.2}x\n",
        times[2].as_secs_f64() / times[0].as_secs_f64()
    );

    // The last of 8 replicas comes up 3 s after the hook starts; five trials, fresh nodes each.
    let mut reactions = Vec::new();
    for subnet in 4..9u8 {
        let mut nodes = Vec::new();
        for n in 0..8 {
            nodes.push(start(&network, subnet, n).await);
        }
        let late_network = network.clone();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let node = start(&late_network, subnet, 8).await;
            (node, Instant::now())
        });
        let (_, code, _) = run_hook(&hook, &dir, subnet, 8).await;
        let exited = Instant::now();
        let (_node, reachable_at) = late.await.unwrap();
        assert_eq!(code, 0, "the hook failed in the reaction trial");
        reactions.push(exited.duration_since(reachable_at).as_secs_f64());
    }
    let trials: Vec<String> = reactions.iter().map(|r| format!("{r:.3}")).collect();
    reactions.sort_by(f64::total_cmp);
    println!(
        "Last replica reachable → hook exit, 5 trials: {} s (median {:.3} s, max {:.3} s)\n",
        trials.join(", "),
        reactions[2],
        reactions[4]
    );

    let size = std::fs::metadata(&hook).map(|m| m.len()).unwrap_or(0);
    println!(
        "Release binary: {:.2} MB ({hook}, static, stripped, LTO, opt-level s)\n",
        size as f64 / 1_000_000.0
    );
    // The image is scratch plus these two files, so their sum bounds its uncompressed size.
    let ca_bundle = std::fs::metadata("/etc/ssl/certs/ca-certificates.crt")
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "Image content (binary + CA bundle on scratch): {:.2} MB uncompressed\n",
        (size + ca_bundle) as f64 / 1_000_000.0
    );
    println!(
        "Peak RSS of the hook processes (max over the runs, getrusage RUSAGE_CHILDREN): {:.1} MB",
        peak_rss as f64 / 1024.0
    );
    println!(
        "\n## Database settings\n\nWrite latency cannot be measured against the double, which has no disk. The latency the \
         chosen settings buy was measured on a real immudb 1.10.0 (README, \"Database settings and write \
         latency\": syncFrequency 20 ms → 8.3 ms per write, 5 ms → 5.2 ms, 1 ms → ~4 ms; synchronous \
         replication 93-96 ms → 11.5 ms with 1 ms on primary and replica). That the values reach every \
         database, primary and replicas, is tested: `hook/tests/settings.rs` reads them back with \
         GetDatabaseSettingsV2 on each node and checks the reload order and the settings in effect."
    );
    let _ = std::fs::remove_dir_all(&dir);
}

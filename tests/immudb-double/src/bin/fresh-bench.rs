//! Benchmarks a replica's freshness after a quiet period, against doubles whose replicators back
//! off with immudb's own timing (1 s, doubling, 2 minutes, 10 % jitter): the delay until one write
//! is on the replica after quiet periods of 0 s, 20 s, 60 s and 5 minutes, with the release agent
//! (`immudb-hook agent`, its defaults: a look every second) and without one (immudb alone), every
//! configuration on its own cluster and all at once; then what watching costs the agent per look
//! (CPU, calls) and what the wakes cost the primary (logins). Prints a BENCHMARKS.md section.
//! Usage: fresh-bench <path to immudb-hook>

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use immudb_double::replicator::Backoff;
use immudb_double::{Network, Node};

mod support;

const AGENT_PORT: u16 = 9498;
const ADMIN: &str = "bench-admin";
/// (quiet period, trials): the longer ones once, they take minutes each.
const QUIET: [(u64, usize); 4] = [(0, 3), (20, 3), (60, 2), (300, 1)];
/// immudb 1.11.1 on the real node (`../shared/immudb-facts.md`), one async replica.
const REAL: [(u64, &str); 4] = [
    (0, "1.97"),
    (20, "9.54"),
    (60, "63.26"),
    (300, "not measured"),
];

/// This bench's addresses: 127.76.x.y.
fn ip(subnet: u8, node: u8) -> IpAddr {
    support::ip(76, subnet, node)
}

async fn start(network: &Network, subnet: u8, node: u8) -> Node {
    let mut options = support::node_options(ip(subnet, node), ADMIN);
    options.replication_retry = Backoff::IMMUDB;
    Node::start(options, network).await.expect("start double")
}

async fn converge(hook: &str, dir: &Path, subnet: u8) {
    let status = support::hook_command(hook, dir, ip(subnet, 0), &[ip(subnet, 1)])
        .arg("converge")
        .status()
        .await
        .expect("run converge");
    assert!(status.success(), "converge failed");
}

/// The release agent of replica 1 of `subnet`, with its defaults but `flags`.
fn agent(hook: &str, dir: &Path, subnet: u8, flags: &[&str]) -> tokio::process::Child {
    support::hook_command(hook, dir, ip(subnet, 0), &[ip(subnet, 1)])
        .arg("agent")
        .arg("--role=replica")
        .arg(format!(
            "--listen={}",
            SocketAddr::new(ip(subnet, 1), AGENT_PORT)
        ))
        .arg(format!("--local-address={}", ip(subnet, 1)))
        .args(flags)
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent")
}

fn transactions(node: &Node, database: &str) -> u64 {
    node.with_state(|s| s.databases.get(database).map_or(0, |d| d.tx_count()))
}

/// Commits one transaction on the primary; returns the time until the replica holds it.
async fn one_write(primary: &Node, replica: &Node) -> Duration {
    let tx = primary.with_state(|s| {
        let ledger = &mut s.databases.get_mut("appdb").expect("appdb").ledger;
        ledger.commit(&[(b"k".to_vec(), b"v".to_vec())]);
        ledger.tx_count()
    });
    let written = Instant::now();
    while transactions(replica, "appdb") < tx {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    written.elapsed()
}

/// What one configuration measured.
struct Trials {
    delays: Vec<Duration>,
    /// Logins on the primary (the replicator's reconnects) per trial.
    logins: f64,
    /// Wakes the agent counted per trial.
    wakes: f64,
}

/// One configuration: quiet periods of `quiet` seconds, `trials` times, with or without the
/// agent.
async fn quiet_trials(
    hook: String,
    dir: std::path::PathBuf,
    network: Network,
    subnet: u8,
    quiet: u64,
    trials: usize,
    watched: bool,
) -> Trials {
    let primary = start(&network, subnet, 0).await;
    let replica = start(&network, subnet, 1).await;
    converge(&hook, &dir, subnet).await;
    let _agent = watched.then(|| agent(&hook, &dir, subnet, &[]));
    let metrics_url = format!("{}/metrics", SocketAddr::new(ip(subnet, 1), AGENT_PORT));
    let wakes = || async {
        let body = support::get(&metrics_url)
            .await
            .map(|(_, b)| b)
            .unwrap_or_default();
        let wakes = support::metric(&body, "immudb_agent_replicator_wakes_total{db=\"appdb\"}");
        if wakes.is_nan() {
            0.0
        } else {
            wakes
        }
    };
    // A first write to start from: the replica holds everything, its replicator just advanced.
    one_write(&primary, &replica).await;
    let (logins_before, wakes_before) = (primary.with_state(|s| s.logins), wakes().await);
    let mut delays = Vec::new();
    for _ in 0..trials {
        tokio::time::sleep(Duration::from_secs(quiet)).await;
        delays.push(one_write(&primary, &replica).await);
    }
    let logins = primary.with_state(|s| s.logins) - logins_before;
    Trials {
        delays,
        logins: logins as f64 / trials as f64,
        wakes: (wakes().await - wakes_before) / trials as f64,
    }
}

fn seconds(delays: &[Duration]) -> String {
    delays
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an agent with `databases` replicated databases costs per watch look: CPU and calls.
async fn watch_cost(hook: &str, dir: &Path, network: &Network, subnet: u8, databases: usize) {
    let names: Vec<String> = (0..databases).map(|i| format!("db{i}")).collect();
    let dir = dir.join(format!("watch-{databases}"));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["admin", "replication"] {
        std::fs::copy(dir.parent().unwrap().join(file), dir.join(file)).unwrap();
    }
    std::fs::write(
        dir.join("spec.json"),
        format!("{{\"databases\": {names:?}}}"),
    )
    .unwrap();
    let primary = start(network, subnet, 0).await;
    let replica = start(network, subnet, 1).await;
    converge(hook, &dir, subnet).await;
    const WINDOW: Duration = Duration::from_secs(20);
    let mut measured = Vec::new();
    // Polls every 5 s either way; with looks every second between them, or none.
    let metrics_url = format!("{}/metrics", SocketAddr::new(ip(subnet, 1), AGENT_PORT));
    let logins = || async {
        let body = support::get(&metrics_url)
            .await
            .map(|(_, b)| b)
            .unwrap_or_default();
        support::metric(&body, "immudb_agent_logins_total")
    };
    for watch in ["5s", "1s"] {
        let mut child = agent(hook, &dir, subnet, &[&format!("--watch-interval={watch}")]);
        let pid = child.id().expect("agent pid");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let calls = || {
            primary.faults.calls.load(Ordering::SeqCst)
                + replica.faults.calls.load(Ordering::SeqCst)
        };
        let (cpu, calls_before, logins_before) = (support::usage(pid).0, calls(), logins().await);
        tokio::time::sleep(WINDOW).await;
        let cpu = support::usage(pid).0 - cpu;
        measured.push((cpu, calls() - calls_before, logins().await - logins_before));
        let _ = child.kill().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 20 s at one look a second, less the polls (every 5th second): 16 looks.
    let looks = WINDOW.as_secs_f64() * 4.0 / 5.0;
    let (polls_only, watching) = (measured[0], measured[1]);
    println!(
        "| {databases} | {:.2} ms | {:.1} | {:.0} |",
        (watching.0 - polls_only.0) * 1000.0 / looks,
        (watching.1 as f64 - polls_only.1 as f64) / looks,
        watching.2,
    );
}

#[tokio::main]
async fn main() {
    let hook = std::env::args()
        .nth(1)
        .expect("usage: fresh-bench <path to immudb-hook>");
    let dir = std::env::temp_dir().join(format!("fresh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin"), ADMIN).unwrap();
    std::fs::write(dir.join("replication"), "bench-replication").unwrap();
    std::fs::write(dir.join("spec.json"), "{\"databases\": [\"appdb\"]}").unwrap();
    let network = Network::default();

    println!("\n## Replica freshness after a quiet period\n");
    println!(
        "`make bench`: one write after a quiet period, and the time until the replica holds it. Each configuration is a primary and one async replica of the immudb double, whose replicator backs off as immudb 1.11.1's does (sleeps of 2, 4, 8 ... s after each empty fetch, capped at 2 minutes, less up to 10 % jitter); with the release agent at its defaults (a look every second, a wake after 2 s without progress) and without one. All configurations ran at once; a trial's quiet period starts when the replica holds the previous write.\n"
    );
    let mut runs = Vec::new();
    let mut subnet = 1;
    for (quiet, trials) in QUIET {
        for watched in [false, true] {
            let (hook, dir, network) = (hook.clone(), dir.clone(), network.clone());
            runs.push(tokio::spawn(quiet_trials(
                hook, dir, network, subnet, quiet, trials, watched,
            )));
            subnet += 1;
        }
    }
    let mut results = Vec::new();
    for run in runs {
        results.push(run.await.expect("a configuration ran"));
    }
    println!("| quiet period | immudb alone (s) | with the agent (s) | real immudb 1.11.1, alone (s) | wakes per write | logins on the primary per write, alone / with the agent |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (i, (quiet, _)) in QUIET.iter().enumerate() {
        let (alone, watched) = (&results[2 * i], &results[2 * i + 1]);
        let quiet_text = match quiet {
            0 => "0 s".to_string(),
            q if q % 60 == 0 => format!("{} min", q / 60),
            q => format!("{q} s"),
        };
        println!(
            "| {quiet_text} | {} | {} | {} | {:.1} | {:.1} / {:.1} |",
            seconds(&alone.delays),
            seconds(&watched.delays),
            REAL[i].1,
            watched.wakes,
            alone.logins,
            watched.logins,
        );
    }
    println!("\nA write right after the replica advanced (quiet 0 s) waits for the replicator's own first retry, 2 s at most: the agent leaves a replica alone until it has not advanced for 2 s, since one catching up advances every second. After that the agent's next look wakes it (an UpdateDatabaseV2 with empty replication settings: immudb restarts the replicator, which fetches at once), so the delay is the time to that look plus the restart: the real server fetched 0.16 s after an update that repeated its replication settings unchanged (the facts' run; immudb's UpdateDatabaseV2 restarts the replicator whenever replication settings are present, empty ones included, as its server.go reads). Each empty fetch ends immudb's session on the primary and the next fetch logs in again, so an idle replicator costs the primary a login per retry either way; a wake costs one more login and a write into systemdb, and after it the replicator retries from 2 s again.\n");

    println!("What watching costs: the release agent on a replica, polls every 5 s, with a look every second between them against none; per look, over 20 s:\n");
    println!("| replicated databases | agent CPU per look (user + system) | gRPC calls per look (replica + primary) | agent logins in the 20 s |");
    println!("| --- | --- | --- | --- |");
    watch_cost(&hook, &dir, &network, 100, 2).await;
    watch_cost(&hook, &dir, &network, 101, 10).await;
    println!("\nA look is one DatabaseListV2 on the replica and UseDatabase + CurrentState per database on the primary, over the two sessions the agent keeps: no login.");
    let _ = std::fs::remove_dir_all(&dir);
}

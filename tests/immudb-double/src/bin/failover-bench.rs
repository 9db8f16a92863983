//! Benchmarks failover with the release agent (`immudb-hook agent`) against the immudb double and
//! the Kubernetes API double, the pods named as the chart names them: the time from the primary's
//! loss to the first write the write Service accepts again, the returning primary's time until
//! it is read-only and until it is Ready as a replica, the same for a primary paused (immudb and
//! agent stopped) past the lease and resumed, with what a client connected straight to it got
//! acknowledged after it resumed, and what failover adds to each poll of an agent. The doubles'
//! replicators retry as immudb's do (2 s, 4 s, 8 s ... after failures in a row). Prints a
//! BENCHMARKS.md section on stdout. Usage: failover-bench <path to immudb-hook>

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use immudb_double::replicator::Backoff;
use immudb_double::{Network, Node, NodeOptions};

mod support;

use support::release::{
    add_pod, pod, pod_host, session, set, Probes, Release, ADMIN, AGENT_PORT, NS,
};

const DATABASES: usize = 10;
/// This bench's addresses: 127.79.x.y.
const BENCH: u8 = 79;
/// Writes the new primary takes while the old one is away.
const WRITES_WHILE_AWAY: usize = 50;

fn ip(subnet: u8, node: u8) -> IpAddr {
    support::ip(BENCH, subnet, node)
}

/// The kubelet probes every 20 ms: what the bench measures is the agents', not the probes'.
const FAST_PROBES: Probes = Probes {
    period: Duration::from_millis(20),
};

/// How the agents run.
#[derive(Clone, Copy)]
struct Mode {
    poll_interval: &'static str,
    /// failover.leaseDuration; None: failover off.
    lease_duration: Option<&'static str>,
    /// The spec: synchronous acks 1, or asynchronous with failover.allowDataLoss.
    sync: bool,
}

impl Mode {
    /// The directory with the files of this mode's spec.
    fn dir(&self, dir: &Path) -> PathBuf {
        dir.join(if self.sync { "sync" } else { "async" })
    }
}

async fn status(ip: IpAddr, path: &str) -> Option<u16> {
    support::get(&format!("{ip}:{AGENT_PORT}{path}"))
        .await
        .map(|(s, _)| s)
}

/// A release whose agents all run in `mode`, every agent Ready, a write taken.
async fn settled_release(
    hook: &str,
    dir: &Path,
    network: &Network,
    subnet: u8,
    mode: Mode,
) -> Release {
    let immudb_backoff = |mut options: NodeOptions| {
        options.replication_retry = Backoff::IMMUDB;
        options
    };
    let lease = mode.lease_duration.map(|lease| (lease, "2m"));
    let dir = mode.dir(dir);
    let mut release = Release::start(
        (BENCH, subnet),
        network,
        &dir,
        immudb_backoff,
        lease,
        FAST_PROBES,
    )
    .await;
    release.poll_interval = mode.poll_interval.into();
    release.name_pods_as_the_chart(network);
    if !mode.sync {
        release
            .env
            .push(("IMMUDB_AGENT_ALLOW_DATA_LOSS".into(), "true".into()));
    }
    release.start_agents(hook);
    for n in 0..3 {
        while status(release.ip(n), "/readyz").await != Some(200) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    while !release.write(b"before").await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the replicas settle into their polling rhythm.
    tokio::time::sleep(Duration::from_secs(2)).await;
    release
}

/// Writes through the write Service until one is acknowledged; the seconds since `since`.
async fn first_write_after(release: &Release, since: Instant) -> f64 {
    let mut n = 0u32;
    loop {
        n += 1;
        if release.write(format!("after-{n}").as_bytes()).await {
            return since.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Seconds from `since` until `condition` holds, looking every millisecond.
async fn until(since: Instant, mut condition: impl FnMut() -> bool) -> f64 {
    while !condition() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    since.elapsed().as_secs_f64()
}

/// Whether db0 on `node` is read-only (a replica).
fn read_only(node: &Node) -> bool {
    node.with_state(|s| s.databases["db0"].replication.replica)
}

/// From now on, the seconds from `since` until db0 of `node` is read-only, looked at every
/// millisecond in the background.
fn read_only_after(node: &Node, since: Instant) -> tokio::task::JoinHandle<f64> {
    let state = node.state.clone();
    tokio::spawn(async move {
        until(since, || {
            state.lock().unwrap().databases["db0"].replication.replica
        })
        .await
    })
}

fn tx_count(release: &Release, node: u8) -> u64 {
    release.nodes[node as usize].with_state(|s| s.databases["db0"].tx_count())
}

/// What one trial measured, in seconds.
struct Trial {
    /// The primary lost or paused → the first write the write Service accepts.
    failover: f64,
    /// The old primary back (or resumed) → db0 read-only on it.
    read_only: f64,
    /// The old primary back (or resumed) → its agent Ready, holding every write made meanwhile;
    /// None when it is diverged (it committed writes the new primary lacks).
    ready: Option<f64>,
    /// Paused only: writes a client connected straight to it got acknowledged after it resumed.
    acknowledged_after_resume: usize,
}

/// The seconds from `since` until the returning pod's agent is Ready and the pod holds
/// everything the new primary holds.
async fn rejoined(release: &Release, since: Instant) -> f64 {
    let elected = (1..3)
        .find(|&n| release.holder() == Some(pod_host(n)))
        .expect("a replica holds the Lease");
    loop {
        let ready = status(release.ip(0), "/readyz").await == Some(200);
        if ready && tx_count(release, 0) >= tx_count(release, elected) {
            return since.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The primary is lost with its pod, then returns on its volume.
async fn lost_trial(hook: &str, dir: &Path, network: &Network, subnet: u8, mode: Mode) -> Trial {
    let mut release = settled_release(hook, dir, network, subnet, mode).await;
    let lost = Instant::now();
    release.agents[0] = None;
    release.nodes[0].isolate(true);
    release.kube.remove_pod(NS, &pod(0));
    let failover = first_write_after(&release, lost).await;
    for n in 0..WRITES_WHILE_AWAY {
        release.write(format!("while-away-{n}").as_bytes()).await;
    }
    // The same pod back on its volume: immudb opens its databases writable, its agent starts.
    let back = Instant::now();
    add_pod(&release.kube, 0, release.ip(0));
    release.nodes[0].isolate(false);
    release.agents[0] = Some(release.agent(hook, 0));
    let read_only = until(back, || read_only(&release.nodes[0])).await;
    let ready = Some(rejoined(&release, back).await);
    Trial {
        failover,
        read_only,
        ready,
        acknowledged_after_resume: 0,
    }
}

/// Sends `signal` to the agent of `node`.
fn signal(release: &Release, node: u8, signal: &str) {
    let pid = release.agents[node as usize]
        .as_ref()
        .and_then(tokio::process::Child::id)
        .expect("the agent runs");
    std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill runs");
}

/// The whole primary pod stops (immudb and agent) past the lease, then resumes; a client
/// connected straight to it writes from the moment it resumes until it is read-only.
async fn paused_trial(hook: &str, dir: &Path, network: &Network, subnet: u8, mode: Mode) -> Trial {
    let release = settled_release(hook, dir, network, subnet, mode).await;
    let direct = session(&release.ip(0).to_string(), "db0")
        .await
        .expect("a session on db0");
    let paused = Instant::now();
    release.nodes[0].pause(true);
    signal(&release, 0, "STOP");
    let failover = first_write_after(&release, paused).await;
    for n in 0..WRITES_WHILE_AWAY {
        release.write(format!("while-away-{n}").as_bytes()).await;
    }
    let resumed = Instant::now();
    let fenced = read_only_after(&release.nodes[0], resumed);
    release.nodes[0].pause(false);
    signal(&release, 0, "CONT");
    let mut acknowledged = 0;
    let mut n = 0;
    while !read_only(&release.nodes[0]) {
        n += 1;
        let key = format!("after-resume-{n}");
        let write = tokio::time::timeout(Duration::from_millis(200), set(&direct, key.as_bytes()));
        if matches!(write.await, Ok(Some(()))) {
            acknowledged += 1;
        }
    }
    let read_only = fenced.await.expect("the sampler ends");
    let ready = match acknowledged {
        0 => Some(rejoined(&release, resumed).await),
        // It committed writes the new primary lacks: kept read-only, never Ready.
        _ => None,
    };
    Trial {
        failover,
        read_only,
        ready,
        acknowledged_after_resume: acknowledged,
    }
}

/// CPU per poll and API calls per poll of the primary's and a replica's agent over 10 s.
async fn poll_cost(
    hook: &str,
    dir: &Path,
    network: &Network,
    subnet: u8,
    failover: bool,
) -> [(f64, f64); 2] {
    let mode = Mode {
        poll_interval: "200ms",
        lease_duration: failover.then_some("1s"),
        sync: true,
    };
    let release = settled_release(hook, dir, network, subnet, mode).await;
    let mut result = [(0.0, 0.0); 2];
    for (slot, node) in [(0, 0u8), (1, 1u8)] {
        let pid = release.agents[node as usize]
            .as_ref()
            .and_then(|c| c.id())
            .expect("pid");
        let url = format!("{}:{AGENT_PORT}/metrics", ip(subnet, node));
        let polls = |body: Option<(u16, String)>| {
            body.map_or(f64::NAN, |(_, b)| {
                support::metric(&b, "immudb_agent_polls_total")
            })
        };
        let token = format!("token-{node}");
        let calls = || release.kube.calls().iter().filter(|c| c.0 == token).count() as f64;
        let calls_before = calls();
        let (cpu_before, polls_before) = (support::usage(pid).0, polls(support::get(&url).await));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (cpu_after, polls_after) = (support::usage(pid).0, polls(support::get(&url).await));
        let n = polls_after - polls_before;
        result[slot] = (
            (cpu_after - cpu_before) * 1000.0 / n,
            (calls() - calls_before) / n,
        );
    }
    result
}

fn seconds(trials: &[Trial], of: impl Fn(&Trial) -> f64) -> String {
    let values: Vec<String> = trials.iter().map(|t| format!("{:.1}", of(t))).collect();
    values.join(", ")
}

fn milliseconds(trials: &[Trial], of: impl Fn(&Trial) -> f64) -> String {
    let values: Vec<String> = trials
        .iter()
        .map(|t| format!("{:.0}", of(t) * 1000.0))
        .collect();
    values.join(", ")
}

fn ready(trials: &[Trial]) -> String {
    let values: Vec<String> = trials
        .iter()
        .map(|t| t.ready.map_or("diverged".into(), |s| format!("{s:.1}")))
        .collect();
    values.join(", ")
}

#[tokio::main]
async fn main() {
    let hook = std::env::args()
        .nth(1)
        .expect("usage: failover-bench <path to immudb-hook>");
    let dir = std::env::temp_dir().join(format!("failover-bench-{}", std::process::id()));
    let names: Vec<String> = (0..DATABASES).map(|i| format!("db{i}")).collect();
    for sync in [true, false] {
        let replication = match sync {
            true => r#"{"sync": {"enabled": true, "acks": 1}, "allowTxDiscarding": true}"#,
            false => r#"{"allowTxDiscarding": true}"#,
        };
        let mode = Mode {
            poll_interval: "",
            lease_duration: None,
            sync,
        };
        let files = mode.dir(&dir);
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("admin"), ADMIN).unwrap();
        std::fs::write(files.join("replication"), "bench-replication").unwrap();
        let spec = format!("{{\"databases\": {names:?}, \"replication\": {replication}}}");
        std::fs::write(files.join("spec.json"), spec).unwrap();
    }
    let network = Network::default();

    println!("\n## Failover\n");
    println!(
        "`make bench`: the release agent in a primary and two replicas with {DATABASES} databases, against the immudb double and the Kubernetes API double on loopback (2 cores), pods named as the chart names them; the doubles' replicators retry as immudb's (2 s, 4 s, 8 s ... after failures in a row). Seconds per trial.\n"
    );
    let settings = [
        ("5s", "15s", 2, " (the chart's defaults)"),
        ("1s", "3s", 3, ""),
    ];
    let mut subnet = 1;
    println!("Primary lost (its immudb, agent and pod gone), sync acks 1; then the same pod back on its volume after the new primary took {WRITES_WHILE_AWAY} writes:\n");
    println!("| agent.pollInterval / failover.leaseDuration | lost → first write accepted | back → read-only (ms) | back → Ready as a replica holding every write |\n| --- | --- | --- | --- |");
    for (interval, lease, count, note) in settings {
        let mode = Mode {
            poll_interval: interval,
            lease_duration: Some(lease),
            sync: true,
        };
        let mut trials = Vec::new();
        for _ in 0..count {
            trials.push(lost_trial(&hook, &dir, &network, subnet, mode).await);
            subnet += 1;
        }
        println!(
            "| {interval} / {lease}{note} | {} | {} | {} |",
            seconds(&trials, |t| t.failover),
            milliseconds(&trials, |t| t.read_only),
            ready(&trials)
        );
    }
    println!("\nA failover takes the lease duration counted from the last renew an agent saw (up to one poll before the loss), up to one poll until an agent notices, the election (each pod asked what it holds; the winner then takes the old primary's pod out of the write Service and restarts the other replica's replicators), the promotion, the kubelet's next readiness probe of the new primary, and the other replica's next connection attempt (it must acknowledge the write; immudb's replicator tries again 2 s after its first failure and 4 s after its second, so a trial whose new primary is not routed to by then takes about 6 s longer). The returning pod is read-only within its agent's first poll (immudb answers at once here) and Ready once its replicators caught up.\n");

    println!("Primary paused (immudb and agent stopped, connections kept open) past the lease, then resumed; a client with a session open on it writes from the moment it resumes (writes of 200 ms at most, one after the other) until it is read-only:\n");
    println!("| replication / agent.pollInterval / failover.leaseDuration | paused → first write accepted | resumed → read-only (ms) | writes acknowledged after the resume | resumed → Ready as a replica |\n| --- | --- | --- | --- | --- |");
    for sync in [true, false] {
        for (interval, lease, _, note) in settings {
            let mode = Mode {
                poll_interval: interval,
                lease_duration: Some(lease),
                sync,
            };
            let mut trials = Vec::new();
            for _ in 0..2 {
                trials.push(paused_trial(&hook, &dir, &network, subnet, mode).await);
                subnet += 1;
            }
            let acknowledged: Vec<String> = trials
                .iter()
                .map(|t| t.acknowledged_after_resume.to_string())
                .collect();
            let replication = if sync {
                "sync acks 1"
            } else {
                "async, allowDataLoss"
            };
            println!(
                "| {replication} / {interval} / {lease}{note} | {} | {} | {} | {} |",
                seconds(&trials, |t| t.failover),
                milliseconds(&trials, |t| t.read_only),
                acknowledged.join(", "),
                ready(&trials)
            );
        }
    }
    println!("\nA paused primary's failover is slower than a lost one's: calls to it neither fail nor answer, so a replica's agent waits for each call to it until it ends (a poll interval, 1-10 s), and so does an election's question. With sync acks nothing it takes after resuming is acknowledged: no replica's stream reaches it any more. Asynchronous, it acknowledges what a client connected straight to it writes until its agent's first poll after the resume fences it (diverged: it keeps those writes, which the new primary lacks; not Ready).\n");

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
    println!("\nWith failover each agent reads the Lease every poll and the holder also renews it; labels are patched when a role changes (the primary's again every minute). Sessions each agent holds: the \"Agent\" section above.");
    let _ = std::fs::remove_dir_all(&dir);
}

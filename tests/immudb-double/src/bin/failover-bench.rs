//! Benchmarks failover with the release agent (`immudb-hook agent`) against the immudb double and
//! the Kubernetes API double, the pods named as the chart names them: the time from the primary's
//! loss to the first write the write Service accepts again, the returning primary's time until
//! it is read-only and until it is Ready as a replica, the same for a primary paused (immudb and
//! agent stopped) past the lease and resumed, with what a client connected straight to it got
//! acknowledged after it resumed, and what failover adds to each poll of an agent. The doubles'
//! replicators retry as immudb's do (2 s, 4 s, 8 s ... after failures in a row). Prints a
//! BENCHMARKS.md section on stdout. Usage: failover-bench <path to immudb-hook>

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use immudb_double::proto::immu_service_client::ImmuServiceClient;
use immudb_double::proto::{KeyValue, OpenSessionRequest, SetRequest};
use immudb_double::replicator::Backoff;
use immudb_double::{Network, Node};
use kube_double::{KubeDouble, KubeHandle, Rule};
use tonic::transport::Channel;

mod support;

const NS: &str = "db";
const LEASE: &str = "bench-immudb-primary";
const WRITE_SERVICE: &str = "bench-immudb-primary";
const READ_STATEFULSET: &str = "bench-immudb-read";
const AGENT_PORT: u16 = 9498;
const ADMIN: &str = "bench-admin";
const DATABASES: usize = 10;
/// Writes the new primary takes while the old one is away.
const WRITES_WHILE_AWAY: usize = 50;

fn ip(subnet: u8, node: u8) -> IpAddr {
    support::ip(79, subnet, node)
}

fn pod(node: u8) -> String {
    match node {
        0 => "bench-immudb-primary-0".into(),
        n => format!("{READ_STATEFULSET}-{}", n - 1),
    }
}

/// The pod's DNS name in its headless Service, as the chart gives it: its identity in the Lease.
fn pod_host(node: u8) -> String {
    let service = match node {
        0 => "bench-immudb-primary-hl".to_string(),
        _ => format!("{READ_STATEFULSET}-hl"),
    };
    format!("{}.{service}.{NS}.svc.cluster.local", pod(node))
}

/// How the agents run.
#[derive(Clone, Copy)]
struct Mode {
    poll_interval: &'static str,
    /// failover.leaseDuration; None: failover off.
    lease_duration: Option<&'static str>,
    /// The spec: synchronous acks 1, or asynchronous with failover.allowDataLoss.
    sync: bool,
}

/// Three pods (a primary and two replicas), the API double and the write Service.
struct Release {
    subnet: u8,
    kube: KubeDouble,
    nodes: Vec<Node>,
    agents: Vec<Option<tokio::process::Child>>,
    hosts_file: std::path::PathBuf,
}

impl Release {
    async fn start(subnet: u8, network: &Network, dir: &Path) -> Release {
        let pods: Vec<String> = (0..3).map(pod).collect();
        let names: Vec<&str> = pods.iter().map(String::as_str).collect();
        let kube = KubeDouble::start(Rule::chart(LEASE, READ_STATEFULSET, &names))
            .await
            .expect("start the API double");
        kube.scale_statefulset(NS, READ_STATEFULSET, 2, 2);
        let mut nodes = Vec::new();
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for n in 0..3 {
            let mut options = support::node_options(ip(subnet, n), ADMIN);
            options.replication_retry = Backoff::IMMUDB;
            nodes.push(Node::start(options, network).await.expect("start a double"));
            kube.add_pod(NS, &pod(n), &[], &ip(subnet, n).to_string());
            // One token per agent, so the double can tell their calls apart.
            kube.add_token(&format!("token-{n}"));
            std::fs::write(dir.join(format!("token-{n}")), format!("token-{n}")).unwrap();
            hosts.push_str(&format!("{} {}\n", ip(subnet, n), pod_host(n)));
            // The cluster's DNS, for the doubles' replicators too.
            let address = ip(subnet, n).to_string();
            network.alias(&pod_host(n), move || Some(address.clone()));
        }
        let hosts_file = dir.join(format!("hosts-{subnet}"));
        std::fs::write(&hosts_file, hosts).unwrap();
        let selected = kube.selector(NS, "immudb/role", "primary");
        network.alias(WRITE_SERVICE, move || selected().into_iter().next());
        run_kubelet(kube.handle(), subnet);
        Release {
            subnet,
            kube,
            nodes,
            agents: Vec::new(),
            hosts_file,
        }
    }

    fn holder(&self) -> Option<String> {
        let lease = self.kube.lease(NS, LEASE)?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    }

    fn agent_url(&self, node: u8, path: &str) -> String {
        format!("{}:{AGENT_PORT}{path}", ip(self.subnet, node))
    }

    async fn ready(&self, node: u8) -> bool {
        support::get(&self.agent_url(node, "/readyz"))
            .await
            .is_some_and(|(status, _)| status == 200)
    }

    /// Every agent Ready, and with failover the primary StatefulSet's pod holding the Lease.
    async fn settle(&self, failover: bool) {
        let primary = pod_host(0);
        loop {
            let mut settled = !failover || self.holder().as_deref() == Some(primary.as_str());
            for n in 0..3 {
                settled &= self.ready(n).await;
            }
            if settled {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether db0 on `node` is read-only (a replica).
    fn read_only(&self, node: u8) -> bool {
        self.nodes[node as usize].with_state(|s| s.databases["db0"].replication.replica)
    }

    fn tx_count(&self, node: u8) -> u64 {
        self.nodes[node as usize].with_state(|s| s.databases["db0"].tx_count())
    }
}

/// The kubelet: each pod's readiness from its agent's /readyz, probed every 20 ms (a probe
/// that gets no answer within 500 ms fails).
fn run_kubelet(kube: KubeHandle, subnet: u8) {
    for n in 0..3 {
        let kube = kube.clone();
        tokio::spawn(async move {
            let url = format!("{}:{AGENT_PORT}/readyz", ip(subnet, n));
            loop {
                let ready = matches!(
                    tokio::time::timeout(Duration::from_millis(500), support::get(&url)).await,
                    Ok(Some((200, _)))
                );
                kube.set_ready(NS, &pod(n), ready);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
}

/// The agent of pod `node`.
fn agent(hook: &str, dir: &Path, release: &Release, node: u8, mode: Mode) -> tokio::process::Child {
    let me = ip(release.subnet, node);
    let mut command = support::hook_command(hook, dir, ip(release.subnet, 0), &[]);
    command
        .arg("agent")
        .env_remove("IMMUDB_HOOK_REPLICAS")
        .env("IMMUDB_HOOK_PRIMARY_HOST", pod_host(0))
        .env("IMMUDB_HOOK_REPLICA_STATEFULSET", READ_STATEFULSET)
        .env(
            "IMMUDB_HOOK_REPLICA_SERVICE",
            format!("{READ_STATEFULSET}-hl"),
        )
        .env("IMMUDB_HOOK_REPLICA_COUNT", "2")
        .env("IMMUDB_HOOK_NAMESPACE", NS)
        .env("IMMUDB_HOOK_HOSTS_FILE", &release.hosts_file)
        .env("IMMUDB_HOOK_RESOLV_CONF", dir.join("resolv.conf"))
        .env(
            "IMMUDB_HOOK_SPEC_FILE",
            dir.join(if mode.sync {
                "spec-sync.json"
            } else {
                "spec-async.json"
            }),
        )
        .env(
            "IMMUDB_AGENT_ROLE",
            if node == 0 { "primary" } else { "replica" },
        )
        .env(
            "IMMUDB_AGENT_LISTEN",
            SocketAddr::new(me, AGENT_PORT).to_string(),
        )
        .env("IMMUDB_AGENT_LOCAL_ADDRESS", me.to_string())
        .env("IMMUDB_AGENT_POLL_INTERVAL", mode.poll_interval)
        .kill_on_drop(true);
    match mode.lease_duration {
        Some(lease_duration) => {
            command
                .env("IMMUDB_HOOK_REPLICATION_PRIMARY_HOST", WRITE_SERVICE)
                .env("IMMUDB_HOOK_LEASE_NAME", LEASE)
                .env("IMMUDB_HOOK_KUBE_API_URL", release.kube.url())
                .env(
                    "IMMUDB_HOOK_KUBE_TOKEN_FILE",
                    dir.join(format!("token-{node}")),
                )
                .env("IMMUDB_AGENT_POD_NAME", pod(node))
                .env("IMMUDB_AGENT_POD_HOST", pod_host(node))
                .env("IMMUDB_AGENT_LEASE_DURATION", lease_duration)
                .env("IMMUDB_AGENT_FAILOVER_COOLDOWN", "2m");
            if !mode.sync {
                command.env("IMMUDB_AGENT_ALLOW_DATA_LOSS", "true");
            }
        }
        None => {
            command.env("IMMUDB_HOOK_REPLICATION_PRIMARY_HOST", pod_host(0));
        }
    }
    command.spawn().expect("start an agent")
}

/// A session on db0 of `node`, as a client connected straight to that pod holds one.
async fn direct_session(
    release: &Release,
    node: u8,
) -> Option<(ImmuServiceClient<Channel>, String)> {
    let target = ip(release.subnet, node);
    let mut client = ImmuServiceClient::connect(format!("http://{target}:3322"))
        .await
        .ok()?;
    let session = client
        .open_session(OpenSessionRequest {
            username: b"immudb".to_vec(),
            password: ADMIN.as_bytes().to_vec(),
            database_name: "db0".into(),
        })
        .await
        .ok()?
        .into_inner()
        .session_id;
    Some((client, session))
}

/// One write on `session`, acknowledged within `timeout` or not.
async fn set(
    (client, session): &mut (ImmuServiceClient<Channel>, String),
    key: &[u8],
    timeout: Duration,
) -> bool {
    let mut request = tonic::Request::new(SetRequest {
        k_vs: vec![KeyValue {
            key: key.to_vec(),
            value: key.to_vec(),
        }],
        no_wait: false,
    });
    let Ok(id) = session.parse() else {
        return false;
    };
    request.metadata_mut().insert("sessionid", id);
    matches!(
        tokio::time::timeout(timeout, client.set(request)).await,
        Ok(Ok(_))
    )
}

/// One write through the write Service (whichever pod it routes to now), acknowledged or not.
async fn write(release: &Release, key: &[u8]) -> bool {
    let routed = release.kube.selected_ips(NS, "immudb/role", "primary");
    let Some(node) = (0..3).find(|&n| routed.contains(&ip(release.subnet, n).to_string())) else {
        return false;
    };
    let timeout = Duration::from_millis(500);
    match tokio::time::timeout(timeout, direct_session(release, node)).await {
        Ok(Some(mut session)) => set(&mut session, key, timeout).await,
        _ => false,
    }
}

/// Writes through the write Service until one is acknowledged; the seconds since `since`.
async fn first_write_after(release: &Release, since: Instant, name: &str) -> f64 {
    let mut n = 0u32;
    loop {
        n += 1;
        if write(release, format!("{name}-{n}").as_bytes()).await {
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

/// What one trial measured, in seconds.
#[derive(Default)]
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

/// A release whose agents all run in `mode`, settled on the primary StatefulSet's pod.
async fn settled_release(
    hook: &str,
    dir: &Path,
    network: &Network,
    subnet: u8,
    mode: Mode,
) -> Release {
    let mut release = Release::start(subnet, network, dir).await;
    for n in 0..3 {
        let child = agent(hook, dir, &release, n, mode);
        release.agents.push(Some(child));
    }
    release.settle(mode.lease_duration.is_some()).await;
    let mut primary = direct_session(&release, 0).await.expect("a session on db0");
    while !set(&mut primary, b"before", Duration::from_millis(500)).await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the replicas settle into their polling rhythm.
    tokio::time::sleep(Duration::from_secs(2)).await;
    release
}

/// Waits until the new primary's agent and the returning pod's are Ready and the returning pod
/// holds everything the new primary holds.
async fn rejoined(release: &Release, since: Instant) -> f64 {
    let elected = (1..3)
        .find(|&n| release.holder() == Some(pod_host(n)))
        .expect("a replica holds the Lease");
    loop {
        if release.ready(0).await && release.tx_count(0) >= release.tx_count(elected) {
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
    let failover = first_write_after(&release, lost, "after").await;
    for n in 0..WRITES_WHILE_AWAY {
        write(&release, format!("while-away-{n}").as_bytes()).await;
    }
    // The same pod back on its volume: immudb opens its databases writable, its agent starts.
    let back = Instant::now();
    release
        .kube
        .add_pod(NS, &pod(0), &[], &ip(subnet, 0).to_string());
    release.nodes[0].isolate(false);
    release.agents[0] = Some(agent(hook, dir, &release, 0, mode));
    let read_only = until(back, || release.read_only(0)).await;
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
/// connected straight to it writes from the moment it resumes until its writes are refused.
async fn paused_trial(hook: &str, dir: &Path, network: &Network, subnet: u8, mode: Mode) -> Trial {
    let release = settled_release(hook, dir, network, subnet, mode).await;
    let mut direct = direct_session(&release, 0).await.expect("a session on db0");
    let paused = Instant::now();
    release.nodes[0].pause(true);
    signal(&release, 0, "STOP");
    let failover = first_write_after(&release, paused, "after").await;
    for n in 0..WRITES_WHILE_AWAY {
        write(&release, format!("while-away-{n}").as_bytes()).await;
    }
    let resumed = Instant::now();
    let fenced = read_only_after(&release.nodes[0], resumed);
    release.nodes[0].pause(false);
    signal(&release, 0, "CONT");
    let mut acknowledged = 0;
    let mut n = 0;
    while !release.read_only(0) {
        n += 1;
        let key = format!("after-resume-{n}");
        if set(&mut direct, key.as_bytes(), Duration::from_millis(200)).await {
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
        let url = release.agent_url(node, "/metrics");
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

fn ready(trials: &[Trial]) -> String {
    let values: Vec<String> = trials
        .iter()
        .map(|t| t.ready.map_or("diverged".into(), |s| format!("{s:.1}")))
        .collect();
    values.join(", ")
}

fn milliseconds(trials: &[Trial], of: impl Fn(&Trial) -> f64) -> String {
    let values: Vec<String> = trials
        .iter()
        .map(|t| format!("{:.0}", of(t) * 1000.0))
        .collect();
    values.join(", ")
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
    // No nameserver answers: names resolve through each release's hosts file.
    std::fs::write(
        dir.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let names: Vec<String> = (0..DATABASES).map(|i| format!("db{i}")).collect();
    let sync = format!(
        "{{\"databases\": {names:?}, \"replication\": {{\"sync\": {{\"enabled\": true, \"acks\": 1}}, \"allowTxDiscarding\": true}}}}"
    );
    let asynchronous =
        format!("{{\"databases\": {names:?}, \"replication\": {{\"allowTxDiscarding\": true}}}}");
    std::fs::write(dir.join("spec-sync.json"), sync).unwrap();
    std::fs::write(dir.join("spec-async.json"), asynchronous).unwrap();
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

    println!("Primary paused (immudb and agent stopped, connections kept open) past the lease, then resumed; a client with a session open on it writes from the moment it resumes (writes of 200 ms at most, one after the other) until it is refused:\n");
    println!("| replication / agent.pollInterval / failover.leaseDuration | paused → first write accepted | resumed → read-only (ms) | writes acknowledged after the resume | resumed → Ready as a replica |\n| --- | --- | --- | --- | --- |");
    for sync in [true, false] {
        for (interval, lease, count, note) in settings {
            let mode = Mode {
                poll_interval: interval,
                lease_duration: Some(lease),
                sync,
            };
            let mut trials = Vec::new();
            for _ in 0..count.min(2) {
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

//! Benchmarks failover with the release agent (`immudb-hook agent`) against the immudb double and
//! the Kubernetes API double: the time from the primary's loss to the first write the write
//! Service accepts again, and what failover adds to each poll of an agent. Prints a
//! BENCHMARKS.md section on stdout. Usage: failover-bench <path to immudb-hook>

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use immudb_double::proto::immu_service_client::ImmuServiceClient;
use immudb_double::proto::{KeyValue, OpenSessionRequest, SetRequest};
use immudb_double::{Network, Node, NodeOptions};
use kube_double::{KubeDouble, KubeHandle, Rule};

mod support;

const NS: &str = "db";
const LEASE: &str = "bench-immudb-primary";
const WRITE_SERVICE: &str = "bench-immudb-primary";
const AGENT_PORT: u16 = 9498;
const ADMIN: &str = "bench-admin";
const DATABASES: usize = 10;

fn ip(subnet: u8, node: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 79, subnet, node + 1))
}

fn pod(node: u8) -> String {
    match node {
        0 => "bench-immudb-primary-0".into(),
        n => format!("bench-immudb-read-{}", n - 1),
    }
}

/// Three pods (a primary and two replicas), the API double and the write Service.
struct Release {
    subnet: u8,
    kube: KubeDouble,
    nodes: Vec<Node>,
    agents: Vec<Option<tokio::process::Child>>,
}

impl Release {
    async fn start(subnet: u8, network: &Network, dir: &Path) -> Release {
        let pods: Vec<String> = (0..3).map(pod).collect();
        let names: Vec<&str> = pods.iter().map(String::as_str).collect();
        let kube = KubeDouble::start(Rule::chart(LEASE, "bench-immudb-read", LEASE, &names))
            .await
            .expect("start the API double");
        let mut nodes = Vec::new();
        for n in 0..3 {
            let mut options = NodeOptions::new(
                SocketAddr::new(ip(subnet, n), 3322),
                SocketAddr::new(ip(subnet, n), 9497),
            );
            options.admin_password = ADMIN.into();
            nodes.push(Node::start(options, network).await.expect("start a double"));
            kube.add_pod(NS, &pod(n), &[], &ip(subnet, n).to_string());
            // One token per agent, so the double can tell their calls apart.
            kube.add_token(&format!("token-{n}"));
            std::fs::write(dir.join(format!("token-{n}")), format!("token-{n}")).unwrap();
        }
        let selected = kube.selector(NS, "immudb/role", "primary");
        network.alias(WRITE_SERVICE, move || selected().into_iter().next());
        run_kubelet(kube.handle(), subnet);
        Release {
            subnet,
            kube,
            nodes,
            agents: Vec::new(),
        }
    }

    fn holder(&self) -> Option<String> {
        let lease = self.kube.lease(NS, LEASE)?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    }
}

/// The kubelet: each pod's readiness from its agent's /readyz.
fn run_kubelet(kube: KubeHandle, subnet: u8) {
    tokio::spawn(async move {
        loop {
            for n in 0..3 {
                let url = format!("{}:{AGENT_PORT}", ip(subnet, n));
                let ready = status(&url, "/readyz").await == Some(200);
                kube.set_ready(NS, &pod(n), ready);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

async fn status(address: &str, path: &str) -> Option<u16> {
    get(address, path).await.map(|(s, _)| s)
}

async fn get(address: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(address);
    let mut stream = tokio::time::timeout(Duration::from_millis(500), connect)
        .await
        .ok()?
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// The agent of pod `node`, failover on or off.
fn agent(
    hook: &str,
    dir: &Path,
    release: &Release,
    node: u8,
    failover: Option<(&str, &str)>,
    interval: &str,
) -> tokio::process::Child {
    let replicas = [ip(release.subnet, 1), ip(release.subnet, 2)];
    let mut command = support::hook_command(hook, dir, ip(release.subnet, 0), &replicas);
    let me = ip(release.subnet, node);
    command
        .arg("agent")
        .env(
            "IMMUDB_AGENT_ROLE",
            if node == 0 { "primary" } else { "replica" },
        )
        .env(
            "IMMUDB_AGENT_LISTEN",
            SocketAddr::new(me, AGENT_PORT).to_string(),
        )
        .env("IMMUDB_AGENT_LOCAL_ADDRESS", me.to_string())
        .env("IMMUDB_AGENT_POLL_INTERVAL", interval)
        .env("IMMUDB_HOOK_REPLICATION_PRIMARY_HOST", WRITE_SERVICE)
        .kill_on_drop(true);
    if let Some((lease_duration, cooldown)) = failover {
        command
            .env("IMMUDB_HOOK_LEASE_NAME", LEASE)
            .env("IMMUDB_HOOK_KUBE_API_URL", release.kube.url())
            .env(
                "IMMUDB_HOOK_KUBE_TOKEN_FILE",
                dir.join(format!("token-{node}")),
            )
            .env("IMMUDB_HOOK_NAMESPACE", NS)
            .env("IMMUDB_AGENT_POD_NAME", pod(node))
            .env("IMMUDB_AGENT_POD_HOST", me.to_string())
            .env("IMMUDB_AGENT_LEASE_DURATION", lease_duration)
            .env("IMMUDB_AGENT_FAILOVER_COOLDOWN", cooldown);
    } else if node > 0 {
        command.env(
            "IMMUDB_HOOK_REPLICATION_PRIMARY_HOST",
            ip(release.subnet, 0).to_string(),
        );
    }
    command.spawn().expect("start an agent")
}

/// One write through the write Service (whichever pod it routes to now), acknowledged or not.
async fn write(release: &Release, key: &[u8]) -> bool {
    let Some(target) = release
        .kube
        .selected_ips(NS, "immudb/role", "primary")
        .into_iter()
        .next()
    else {
        return false;
    };
    let attempt = async {
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
        let mut request = tonic::Request::new(SetRequest {
            k_vs: vec![KeyValue {
                key: key.to_vec(),
                value: key.to_vec(),
            }],
            no_wait: false,
        });
        request
            .metadata_mut()
            .insert("sessionid", session.parse().ok()?);
        client.set(request).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Some(_))
    )
}

/// The primary is lost with its pod; returns the seconds until the write Service accepts a write.
async fn failover_trial(
    hook: &str,
    dir: &Path,
    network: &Network,
    subnet: u8,
    (interval, lease_duration): (&str, &str),
) -> f64 {
    let mut release = Release::start(subnet, network, dir).await;
    for n in 0..3 {
        let child = agent(
            hook,
            dir,
            &release,
            n,
            Some((lease_duration, "2m")),
            interval,
        );
        release.agents.push(Some(child));
    }
    let primary = ip(subnet, 0).to_string();
    while !(release.holder().as_deref() == Some(primary.as_str())
        && write(&release, b"before").await)
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
        if write(&release, format!("after-{n}").as_bytes()).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lost.elapsed().as_secs_f64()
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// CPU per poll and API calls per poll of the primary's and a replica's agent over 10 s.
async fn poll_cost(
    hook: &str,
    dir: &Path,
    network: &Network,
    subnet: u8,
    failover: bool,
) -> [(f64, f64); 2] {
    let mut release = Release::start(subnet, network, dir).await;
    let settings = failover.then_some(("1s", "2m"));
    for n in 0..3 {
        let child = agent(hook, dir, &release, n, settings, "200ms");
        release.agents.push(Some(child));
    }
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
            body.map_or(f64::NAN, |(_, b)| metric(&b, "immudb_agent_polls_total"))
        };
        let token = format!("token-{node}");
        let calls = || release.kube.calls().iter().filter(|c| c.0 == token).count() as f64;
        let calls_before = calls();
        let (cpu_before, polls_before) =
            (support::usage(pid).0, polls(get(&url, "/metrics").await));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (cpu_after, polls_after) = (support::usage(pid).0, polls(get(&url, "/metrics").await));
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

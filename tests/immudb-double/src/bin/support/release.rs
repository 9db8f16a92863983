//! A release for the failover benches: a primary and two replicas (immudb doubles), the release
//! agent (`immudb-hook agent`) of each as a process, the Kubernetes API double with the chart's
//! Role, the write Service (the pod labelled primary with failover, the primary StatefulSet's
//! pod without) and a kubelet that probes each pod as the chart configures it.

#![allow(dead_code)] // each bench compiles the support module; only the failover benches use this

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use immudb_double::proto::immu_service_client::ImmuServiceClient;
use immudb_double::proto::{KeyValue, OpenSessionRequest, SetRequest};
use immudb_double::{Network, Node, NodeOptions};
use kube_double::{KubeDouble, KubeHandle, Rule};
use tonic::transport::Channel;

pub const NS: &str = "db";
pub const LEASE: &str = "bench-immudb-primary";
pub const WRITE_SERVICE: &str = "bench-immudb-primary";
pub const AGENT_PORT: u16 = 9498;
pub const ADMIN: &str = "bench-admin";
pub const READ_STATEFULSET: &str = "bench-immudb-read";

pub fn pod(node: u8) -> String {
    match node {
        0 => "bench-immudb-primary-0".into(),
        n => format!("{READ_STATEFULSET}-{}", n - 1),
    }
}

/// The pod's DNS name in its headless Service, as the chart names it.
pub fn pod_host(node: u8) -> String {
    let service = match node {
        0 => "bench-immudb-primary-hl".to_string(),
        _ => format!("{READ_STATEFULSET}-hl"),
    };
    format!("{}.{service}.{NS}.svc.cluster.local", pod(node))
}

/// How the kubelet probes a pod: immudb's startup probe (its /readyz on the metrics port), then
/// the readiness probe (the agent's /readyz), each every `period`, the first at the container's
/// start: the chart's 10 s, or as fast as the doubles allow.
#[derive(Clone, Copy, Debug)]
pub struct Probes {
    pub period: Duration,
}

/// Three pods, the API double, the write Service.
pub struct Release {
    pub bench: u8,
    pub subnet: u8,
    pub dir: PathBuf,
    pub kube: KubeDouble,
    pub nodes: Vec<Node>,
    pub agents: Vec<Option<tokio::process::Child>>,
    /// The Lease's timing and cooldown with failover; None without.
    pub failover: Option<(String, String)>,
    pub poll_interval: String,
    /// Set by [`Release::name_pods_as_the_chart`]: the hosts file the agents resolve the pods'
    /// DNS names with.
    pub hosts_file: Option<PathBuf>,
    /// More environment for every agent.
    pub env: Vec<(String, String)>,
}

impl Release {
    /// A release of bench `bench` on `subnet`; `options` adjusts each double.
    pub async fn start(
        (bench, subnet): (u8, u8),
        network: &Network,
        dir: &Path,
        options: impl Fn(NodeOptions) -> NodeOptions,
        failover: Option<(&str, &str)>,
        probes: Probes,
    ) -> Release {
        let pods: Vec<String> = (0..3).map(pod).collect();
        let names: Vec<&str> = pods.iter().map(String::as_str).collect();
        let kube = KubeDouble::start(Rule::chart(LEASE, READ_STATEFULSET, LEASE, &names))
            .await
            .expect("start the API double");
        let mut nodes = Vec::new();
        for n in 0..3 {
            let ip = super::ip(bench, subnet, n);
            let node_options = options(super::node_options(ip, ADMIN));
            nodes.push(
                Node::start(node_options, network)
                    .await
                    .expect("start a double"),
            );
            add_pod(&kube, n, ip);
            // One token per agent, so the double can tell their calls apart.
            kube.add_token(&format!("token-{n}"));
            std::fs::write(dir.join(format!("token-{n}")), format!("token-{n}")).unwrap();
        }
        let (key, value) = match failover {
            Some(_) => ("immudb/role", "primary"),
            None => ("app.kubernetes.io/component", "primary"),
        };
        let selected = kube.selector(NS, key, value);
        network.alias(WRITE_SERVICE, move || selected().into_iter().next());
        let release = Release {
            bench,
            subnet,
            dir: dir.to_path_buf(),
            kube,
            nodes,
            agents: Vec::new(),
            failover: failover.map(|(l, c)| (l.to_string(), c.to_string())),
            poll_interval: "5s".into(),
            hosts_file: None,
            env: Vec::new(),
        };
        for n in 0..3 {
            run_kubelet(release.kube.handle(), n, release.ip(n), probes);
        }
        release
    }

    pub fn ip(&self, node: u8) -> IpAddr {
        super::ip(self.bench, self.subnet, node)
    }

    pub fn holder(&self) -> Option<String> {
        let lease = self.kube.lease(NS, LEASE)?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    }

    /// Names the pods as the chart does, by their DNS names in the StatefulSet form (otherwise
    /// they are named by their addresses, in a list): the agents resolve them through a hosts
    /// file, the doubles' replicators through the network, and a failover's winner knows the old
    /// primary's pod by its address. Call it before starting the agents.
    pub fn name_pods_as_the_chart(&mut self, network: &Network) {
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for n in 0..3 {
            let address = self.ip(n).to_string();
            hosts.push_str(&format!("{address} {}\n", pod_host(n)));
            network.alias(&pod_host(n), move || Some(address.clone()));
        }
        let file = self.dir.join(format!("hosts-{}", self.subnet));
        std::fs::write(&file, hosts).unwrap();
        // No nameserver answers: names resolve through the hosts file.
        let resolv = self.dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        self.kube.scale_statefulset(NS, READ_STATEFULSET, 2, 2);
        self.hosts_file = Some(file);
    }

    /// Starts the agent of every pod.
    pub fn start_agents(&mut self, hook: &str) {
        self.agents = (0..3).map(|n| Some(self.agent(hook, n))).collect();
    }

    /// The agent of pod `node`, failover on or off.
    pub fn agent(&self, hook: &str, node: u8) -> tokio::process::Child {
        let replicas = [self.ip(1), self.ip(2)];
        let mut command = super::hook_command(hook, &self.dir, self.ip(0), &replicas);
        let me = self.ip(node);
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
            .env("IMMUDB_AGENT_POLL_INTERVAL", &self.poll_interval)
            .env("IMMUDB_HOOK_REPLICATION_PRIMARY_HOST", WRITE_SERVICE)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true);
        let named = self.hosts_file.as_ref().map(|hosts| {
            command
                .env_remove("IMMUDB_HOOK_REPLICAS")
                .env("IMMUDB_HOOK_PRIMARY_HOST", pod_host(0))
                .env("IMMUDB_HOOK_REPLICA_STATEFULSET", READ_STATEFULSET)
                .env(
                    "IMMUDB_HOOK_REPLICA_SERVICE",
                    format!("{READ_STATEFULSET}-hl"),
                )
                .env("IMMUDB_HOOK_REPLICA_COUNT", "2")
                .env("IMMUDB_HOOK_NAMESPACE", NS)
                .env("IMMUDB_HOOK_HOSTS_FILE", hosts)
                .env("IMMUDB_HOOK_RESOLV_CONF", self.dir.join("resolv.conf"));
            pod_host(node)
        });
        if let Some((lease_duration, cooldown)) = &self.failover {
            command
                .env("IMMUDB_HOOK_LEASE_NAME", LEASE)
                .env("IMMUDB_HOOK_KUBE_API_URL", self.kube.url())
                .env(
                    "IMMUDB_HOOK_KUBE_TOKEN_FILE",
                    self.dir.join(format!("token-{node}")),
                )
                .env("IMMUDB_HOOK_NAMESPACE", NS)
                .env("IMMUDB_AGENT_POD_NAME", pod(node))
                .env("IMMUDB_AGENT_POD_HOST", named.unwrap_or(me.to_string()))
                .env("IMMUDB_AGENT_LEASE_DURATION", lease_duration)
                .env("IMMUDB_AGENT_FAILOVER_COOLDOWN", cooldown);
        } else if node > 0 {
            let primary = match &self.hosts_file {
                Some(_) => pod_host(0),
                None => self.ip(0).to_string(),
            };
            command.env("IMMUDB_HOOK_REPLICATION_PRIMARY_HOST", primary);
        }
        command.spawn().expect("start an agent")
    }

    /// The IP the write Service routes to now.
    pub fn write_target(&self) -> Option<String> {
        let (key, value) = match self.failover {
            Some(_) => ("immudb/role", "primary"),
            None => ("app.kubernetes.io/component", "primary"),
        };
        self.kube.selected_ips(NS, key, value).into_iter().next()
    }

    /// One write through the write Service (whichever pod it routes to now), acknowledged or not.
    pub async fn write(&self, key: &[u8]) -> bool {
        let Some(target) = self.write_target() else {
            return false;
        };
        let attempt = async {
            let session = session(&target, "db0").await?;
            let written = set(&session, key).await;
            close(&session).await;
            written
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), attempt).await,
            Ok(Some(()))
        )
    }
}

/// The pod as the StatefulSet creates it: its component label and its address, not Ready yet.
pub fn add_pod(kube: &KubeDouble, node: u8, ip: IpAddr) {
    let component = if node == 0 { "primary" } else { "read" };
    kube.add_pod(
        NS,
        &pod(node),
        &[("app.kubernetes.io/component", component)],
        &ip.to_string(),
    );
}

/// A session of the admin on `database` at `ip`: the client and its session id.
pub async fn session(ip: &str, database: &str) -> Option<(ImmuServiceClient<Channel>, String)> {
    let mut client = ImmuServiceClient::connect(format!("http://{ip}:3322"))
        .await
        .ok()?;
    let id = client
        .open_session(OpenSessionRequest {
            username: b"immudb".to_vec(),
            password: ADMIN.as_bytes().to_vec(),
            database_name: database.into(),
        })
        .await
        .ok()?
        .into_inner()
        .session_id;
    Some((client, id))
}

/// One Set of `key` on the session.
pub async fn set((client, id): &(ImmuServiceClient<Channel>, String), key: &[u8]) -> Option<()> {
    let mut request = tonic::Request::new(SetRequest {
        k_vs: vec![KeyValue {
            key: key.to_vec(),
            value: key.to_vec(),
        }],
        no_wait: false,
    });
    request.metadata_mut().insert("sessionid", id.parse().ok()?);
    client.clone().set(request).await.ok().map(drop)
}

/// Ends the session: immudb keeps an idle one 3 minutes and allows 100.
pub async fn close((client, id): &(ImmuServiceClient<Channel>, String)) {
    let mut request = tonic::Request::new(());
    if let Ok(id) = id.parse() {
        request.metadata_mut().insert("sessionid", id);
    }
    let _ = client.clone().close_session(request).await;
}

/// The kubelet's probes of pod `node`, for as long as the bench runs: after the pod (re)appears,
/// the startup probe until immudb answers, then the readiness probe, every `probes.period`.
fn run_kubelet(kube: KubeHandle, node: u8, ip: IpAddr, probes: Probes) {
    let pod = pod(node);
    let status = move |port: u16, path: &'static str| {
        let url = format!("{ip}:{port}{path}");
        async move { super::get(&url).await.map(|(status, _)| status) }
    };
    tokio::spawn(async move {
        let mut started = false;
        loop {
            if !kube.exists(NS, &pod) {
                started = false;
            } else if !started {
                started = status(9497, "/readyz").await == Some(200);
                if started {
                    continue;
                }
            } else {
                let ready = status(AGENT_PORT, "/readyz").await == Some(200);
                kube.set_ready(NS, &pod, ready);
            }
            tokio::time::sleep(probes.period).await;
        }
    });
}

/// A client that writes through the write Service all the time, as an application does: one
/// session kept while it works, a new connection (wherever the Service routes then) `reconnect`
/// after a failed or unanswered write (each bounded by 2 s).
pub struct Writer {
    task: tokio::task::JoinHandle<()>,
    acknowledged: Arc<Mutex<Vec<std::time::Instant>>>,
}

impl Writer {
    pub fn start(
        route: impl Fn() -> Option<String> + Send + 'static,
        reconnect: Duration,
    ) -> Writer {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let acks = acknowledged.clone();
        let task = tokio::spawn(async move {
            let mut open = None;
            for i in 0u64.. {
                if open.is_none() {
                    open = match route() {
                        Some(ip) => session(&ip, "db0").await,
                        None => None,
                    };
                }
                let key = format!("w-{i}");
                let written = match &open {
                    Some(session) => matches!(
                        tokio::time::timeout(Duration::from_secs(2), set(session, key.as_bytes()))
                            .await,
                        Ok(Some(()))
                    ),
                    None => false,
                };
                if written {
                    acks.lock().unwrap().push(std::time::Instant::now());
                } else {
                    open = None;
                    tokio::time::sleep(reconnect).await;
                }
            }
        });
        Writer { task, acknowledged }
    }

    pub fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Stops; the longest time between two acknowledged writes.
    pub fn stop(self) -> Duration {
        self.task.abort();
        let acks = self.acknowledged.lock().unwrap();
        acks.windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

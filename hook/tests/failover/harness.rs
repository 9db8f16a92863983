//! The failover tests' release: three pods (more once scaled) as the chart runs them, the
//! Kubernetes API double, the write Service, a kubelet probing each pod's agent, and a sampler
//! that watches every live node all the time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use immudb_double::Node;
use immudb_hook::client::Client;
use immudb_hook::types::{Credentials, Secret};
use kube_double::{KubeDouble, Rule};

pub const NS: &str = "db";
pub const LEASE: &str = "db-immudb-primary";
pub const WRITE_SERVICE: &str = "db-immudb-primary";
pub const READ_STATEFULSET: &str = "db-immudb-read";
pub const WAIT: Duration = Duration::from_secs(20);
/// The chart's replicaCount in these tests; `failover.maxReplicas` is [`Setup::max_replicas`].
pub const REPLICA_COUNT: u8 = 2;
/// The most pods a test starts (the primary StatefulSet's and four replicas).
pub const MOST_NODES: u8 = 5;

pub fn pod_name(node: u8) -> String {
    match node {
        0 => "db-immudb-primary-0".into(),
        n => format!("db-immudb-read-{}", n - 1),
    }
}

/// The pod's DNS name in its headless Service: its identity in the Lease.
pub fn pod_host(node: u8) -> String {
    let service = if node == 0 {
        "db-immudb-primary-hl"
    } else {
        "db-immudb-read-hl"
    };
    format!("{}.{service}.{NS}.svc.cluster.local", pod_name(node))
}

pub fn sync_spec() -> serde_json::Value {
    serde_json::json!({
        "databases": ["appdb"],
        "replication": {"sync": {"enabled": true, "acks": 1}, "allowTxDiscarding": true},
    })
}

pub fn async_spec() -> serde_json::Value {
    serde_json::json!({"databases": ["appdb"], "replication": {"allowTxDiscarding": true}})
}

/// How a test's release differs from the chart's defaults.
pub struct Setup {
    pub cooldown: &'static str,
    pub spec: serde_json::Value,
    /// Extra agent flags.
    pub flags: Vec<&'static str>,
    /// failover.maxReplicas: the replica pods the Role lets label themselves.
    pub max_replicas: u8,
    /// Pods whose agent runs as the hook binary in a child process (signals stop and resume it).
    pub processes: Vec<u8>,
    /// Probes in a row that must fail before the kubelet calls a pod not Ready.
    pub probe_failure_threshold: u32,
}

impl Setup {
    /// Sync acks 1, maxReplicas one above replicaCount (a pod the Role names that does not
    /// exist must not hold up an election), every agent in the test's runtime, a kubelet that
    /// calls a pod not Ready at its first failed probe.
    pub fn new(cooldown: &'static str) -> Setup {
        Setup {
            cooldown,
            spec: sync_spec(),
            flags: Vec::new(),
            max_replicas: REPLICA_COUNT + 1,
            processes: Vec::new(),
            probe_failure_threshold: 1,
        }
    }
}

/// Three pods (the primary StatefulSet's and two replicas; more once scaled), the API double,
/// the write Service.
pub struct Release {
    pub cluster: Cluster,
    pub kube: KubeDouble,
    pub nodes: Vec<Node>,
    pub agents: Vec<Option<RunningAgent>>,
    pub setup: Setup,
    /// Set by the sampler when two live nodes were writable and routed to at once.
    pub two_primaries: Arc<AtomicBool>,
    /// Set by the sampler when the write Service routed to two pods at once.
    pub two_routed: Arc<AtomicBool>,
    pub samples: Arc<AtomicUsize>,
}

impl Release {
    pub async fn start(cooldown: &'static str) -> Release {
        Release::start_setup(Setup::new(cooldown)).await
    }

    pub async fn start_with(
        cooldown: &'static str,
        spec: serde_json::Value,
        flags: &[&'static str],
    ) -> Release {
        Release::start_setup(Setup {
            spec,
            flags: flags.to_vec(),
            ..Setup::new(cooldown)
        })
        .await
    }

    pub async fn start_setup(setup: Setup) -> Release {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("TEST_LOG"))
            .with_test_writer()
            .try_init();
        let cluster = Cluster::new();
        // The cluster's DNS: every pod name the tests may use resolves to its node's address.
        let hosts: String = (0..MOST_NODES)
            .map(|n| format!("{} {}\n", cluster.host(n), pod_host(n)))
            .collect();
        let hosts_file = cluster.dir.path().join("hosts");
        let mut known = std::fs::read_to_string(&hosts_file).unwrap();
        known.push_str(&hosts);
        std::fs::write(&hosts_file, known).unwrap();
        let pods: Vec<String> = (0..=setup.max_replicas).map(pod_name).collect();
        let names: Vec<&str> = pods.iter().map(String::as_str).collect();
        let kube = KubeDouble::start(Rule::chart(LEASE, READ_STATEFULSET, &names))
            .await
            .unwrap();
        let replicas = u32::from(REPLICA_COUNT);
        kube.scale_statefulset(NS, READ_STATEFULSET, replicas, replicas);
        let mut nodes = Vec::new();
        for n in 0..=REPLICA_COUNT {
            nodes.push(cluster.start_node(n).await);
            Release::add_pod(&cluster, &kube, n);
        }
        let selected = kube.selector(NS, "immudb/role", "primary");
        cluster
            .network
            .alias(WRITE_SERVICE, move || selected().into_iter().next());
        let mut release = Release {
            cluster,
            kube,
            nodes,
            agents: Vec::new(),
            setup,
            two_primaries: Arc::new(AtomicBool::new(false)),
            two_routed: Arc::new(AtomicBool::new(false)),
            samples: Arc::new(AtomicUsize::new(0)),
        };
        for n in 0..=REPLICA_COUNT {
            let agent = release.agent(n);
            release.agents.push(Some(agent));
        }
        release.sample_writable_primaries();
        release.run_kubelet();
        release
    }

    /// The StatefulSet created pod `node`: its template's labels, its address, its token.
    pub fn add_pod(cluster: &Cluster, kube: &KubeDouble, node: u8) {
        let component = if node == 0 { "primary" } else { "read" };
        kube.add_pod(
            NS,
            &pod_name(node),
            &[("app.kubernetes.io/component", component)],
            &cluster.host(node),
        );
        let token = format!("token-{node}");
        kube.add_token(&token);
        std::fs::write(cluster.dir.path().join(&token), &token).unwrap();
    }

    /// `kubectl scale` of the replica StatefulSet to one more pod: it starts with an empty
    /// volume and its agent. Returns the new node.
    pub async fn scale_up(&mut self) -> u8 {
        let node = self.nodes.len() as u8;
        let replicas = u32::from(node);
        self.kube
            .scale_statefulset(NS, READ_STATEFULSET, replicas, replicas);
        self.nodes.push(self.cluster.start_node(node).await);
        Release::add_pod(&self.cluster, &self.kube, node);
        let agent = self.agent(node);
        self.agents.push(Some(agent));
        self.probe(node);
        node
    }

    /// The kubelet: each pod's readiness from its agent's /readyz, as its readiness probe asks.
    pub fn run_kubelet(&self) {
        for node in 0..self.nodes.len() as u8 {
            self.probe(node);
        }
    }

    /// The kubelet's readiness probe of one pod, for as long as the test runs: a success makes
    /// it Ready, `probe_failure_threshold` failures in a row not Ready.
    pub fn probe(&self, node: u8) {
        let url = format!("http://{}:{AGENT_PORT}/readyz", self.cluster.host(node));
        let (pod, kube) = (pod_name(node), self.kube.handle());
        let threshold = self.setup.probe_failure_threshold;
        tokio::spawn(async move {
            let http = immudb_hook::tls::http_client_builder(None, Duration::from_millis(500))
                .build()
                .unwrap();
            let mut failures = 0;
            loop {
                let ready = match http.get(&url).send().await {
                    Ok(response) => response.status().is_success(),
                    Err(_) => false,
                };
                failures = if ready { 0 } else { failures + 1 };
                if ready || failures >= threshold {
                    kube.set_ready(NS, &pod, ready);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    pub fn agent(&self, node: u8) -> RunningAgent {
        let global = [
            "--replication-primary-host=db-immudb-primary".to_string(),
            format!("--namespace={NS}"),
            format!("--primary-host={}", pod_host(0)),
            format!("--replica-statefulset={READ_STATEFULSET}"),
            "--replica-service=db-immudb-read-hl".into(),
            format!("--replica-count={REPLICA_COUNT}"),
        ];
        let extra = [
            format!("--lease-name={LEASE}"),
            format!("--kube-api-url={}", self.kube.url()),
            format!(
                "--kube-token-file={}",
                self.cluster.path(&format!("token-{node}"))
            ),
            format!("--pod-name={}", pod_name(node)),
            format!("--pod-host={}", pod_host(node)),
            format!("--max-replicas={}", self.setup.max_replicas),
            format!("--failover-cooldown={}", self.setup.cooldown),
        ];
        let global: Vec<&str> = global.iter().map(String::as_str).collect();
        let mut extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        extra.extend(&self.setup.flags);
        if !extra
            .iter()
            .any(|flag| flag.starts_with("--lease-duration="))
        {
            extra.push("--lease-duration=1s");
        }
        let spec = self.setup.spec.clone();
        let args = self.cluster.agent_args(node, &[], spec, &global, &extra);
        if self.setup.processes.contains(&node) {
            self.cluster.agent_process(node, &args)
        } else {
            self.cluster.agent_task(node, &args)
        }
    }

    /// Every few milliseconds: how many pods the write Service routes to, and how many nodes
    /// accept writes, i.e. have appdb writable and are routed to. (A returning pod's immudb
    /// opens its databases as they were, writable, before its agent's first poll fences them;
    /// no Service routes to it then and, with sync acks, no replica acknowledges a write there.)
    pub fn sample_writable_primaries(&self) {
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|n| (n.options.grpc.ip().to_string(), n.state.clone()))
            .collect();
        let routed = self.kube.selector(NS, "immudb/role", "primary");
        let (flag, samples) = (self.two_primaries.clone(), self.samples.clone());
        let two_routed = self.two_routed.clone();
        tokio::spawn(async move {
            loop {
                let selected = routed();
                if selected.len() > 1 {
                    two_routed.store(true, Ordering::SeqCst);
                }
                let writable = nodes
                    .iter()
                    .filter(|(ip, state)| {
                        let state = state.lock().unwrap();
                        selected.contains(ip)
                            && !state.isolated
                            && state
                                .databases
                                .get("appdb")
                                .is_some_and(|db| db.loaded && !db.replication.replica)
                    })
                    .count();
                if writable > 1 {
                    flag.store(true, Ordering::SeqCst);
                }
                samples.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    pub fn holder(&self) -> Option<String> {
        let lease = self.kube.lease(NS, LEASE)?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    }

    pub fn transitions(&self) -> u64 {
        self.kube
            .lease(NS, LEASE)
            .and_then(|l| l["spec"]["leaseTransitions"].as_u64())
            .unwrap_or(0)
    }

    pub async fn ready(&self, node: u8) -> bool {
        match &self.agents[node as usize] {
            Some(agent) => agent.ready().await,
            None => false,
        }
    }

    /// What `node`'s agent answers on /readyz (status and body), for a failure message.
    pub async fn readyz(&self, node: u8) -> (u16, String) {
        match &self.agents[node as usize] {
            Some(agent) => agent.get("/readyz").await,
            None => (0, "no agent".into()),
        }
    }

    /// Every running agent Ready and `node` holding the Lease.
    pub async fn settled_on(&self, node: u8) -> bool {
        if self.holder() != Some(pod_host(node)) {
            return false;
        }
        for n in 0..self.agents.len() as u8 {
            if self.agents[n as usize].is_some() && !self.ready(n).await {
                return false;
            }
        }
        true
    }

    /// The node is lost: immudb unreachable, its agent gone, its pod deleted.
    pub fn lose(&mut self, node: u8) {
        self.agents[node as usize] = None;
        self.nodes[node as usize].isolate(true);
        self.kube.remove_pod(NS, &pod_name(node));
    }

    /// The same pod comes back with its volume.
    pub fn bring_back(&mut self, node: u8) {
        Release::add_pod(&self.cluster, &self.kube, node);
        self.nodes[node as usize].isolate(false);
        self.agents[node as usize] = Some(self.agent(node));
    }

    pub fn no_two_primaries(&self) {
        assert!(self.samples.load(Ordering::SeqCst) > 10, "the sampler ran");
        assert!(
            !self.two_primaries.load(Ordering::SeqCst),
            "two nodes accepted writes at the same moment"
        );
        assert!(
            !self.two_routed.load(Ordering::SeqCst),
            "the write Service routed to two pods at the same moment"
        );
    }
}

pub fn admin() -> Credentials {
    Credentials {
        user: "immudb".into(),
        password: Secret::new(ADMIN_PASSWORD),
    }
}

/// A client of the write Service: a session on whichever node it routes to now.
pub async fn write_session(release: &Release) -> Option<Client> {
    let ip = release
        .kube
        .selected_ips(NS, "immudb/role", "primary")
        .into_iter()
        .next()?;
    let node = release
        .nodes
        .iter()
        .find(|n| n.options.grpc.ip().to_string() == ip)?;
    let session = Client::new(&target(node))
        .ok()?
        .open_session(&admin(), "appdb")
        .await
        .ok()?;
    Some(session)
}

/// Writes `key` through the write Service until one write is acknowledged; returns its tx.
pub async fn write(release: &Release, key: &str) -> u64 {
    write_within(release, key, WAIT).await
}

/// [`write`], giving up after `wait`.
pub async fn write_within(release: &Release, key: &str, wait: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if let Some(session) = write_session(release).await {
            let set = tokio::time::timeout(
                Duration::from_millis(500),
                session.set(key.as_bytes(), key.as_bytes()),
            );
            if let Ok(Ok(tx)) = set.await {
                return tx;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no write of {key} was acknowledged through the write Service");
}

pub fn holds(node: &Node, key: &str) -> bool {
    node.with_state(|s| {
        s.databases
            .get("appdb")
            .and_then(|d| d.ledger.get(key.as_bytes()))
    })
    .is_some_and(|(_, value)| value == key.as_bytes())
}

pub fn tx_count(node: &Node) -> u64 {
    node.with_state(|s| s.databases.get("appdb").map_or(0, |d| d.tx_count()))
}

pub async fn new_primary_elected(release: &Release) -> u8 {
    new_primary_elected_within(release, WAIT).await
}

/// The replica that took the Lease, waiting at most `wait`.
pub async fn new_primary_elected_within(release: &Release, wait: Duration) -> u8 {
    let mut elected = None;
    let found = eventually(wait, || {
        let holder = release.holder();
        let is = |n: u8| holder.as_deref() == Some(pod_host(n).as_str());
        elected = (1..release.nodes.len() as u8).find(|&n| is(n));
        async move { elected.is_some() }
    })
    .await;
    let mut why = Vec::new();
    for agent in release.agents.iter().flatten() {
        why.push(agent.get("/readyz").await.1);
    }
    assert!(
        found,
        "no replica took the Lease: {:?}; agents say {why:?}",
        release.kube.lease(NS, LEASE)
    );
    elected.unwrap()
}

/// The hook binary (the Job, `helm test`) with the release's env and `--lease-name`.
pub async fn hook_binary(release: &Release, subcommand: &[&str]) -> (Option<i32>, String, String) {
    hook_binary_with(release, &[], subcommand).await
}

/// [`hook_binary`] with more env.
pub async fn hook_binary_with(
    release: &Release,
    env: &[(&str, &str)],
    subcommand: &[&str],
) -> (Option<i32>, String, String) {
    let cluster = &release.cluster;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_immudb-hook"))
        .envs(env.iter().copied())
        .env("IMMUDB_HOOK_PRIMARY_HOST", pod_host(0))
        .env("IMMUDB_HOOK_REPLICA_STATEFULSET", READ_STATEFULSET)
        .env("IMMUDB_HOOK_REPLICA_SERVICE", "db-immudb-read-hl")
        .env("IMMUDB_HOOK_REPLICA_COUNT", REPLICA_COUNT.to_string())
        .env("IMMUDB_HOOK_REPLICATION_PRIMARY_HOST", WRITE_SERVICE)
        .env("IMMUDB_HOOK_NAMESPACE", NS)
        .env("IMMUDB_HOOK_LEASE_NAME", LEASE)
        .env("IMMUDB_HOOK_KUBE_API_URL", release.kube.url())
        .env("IMMUDB_HOOK_KUBE_TOKEN_FILE", cluster.path("token-1"))
        .env("IMMUDB_HOOK_ADMIN_PASSWORD_FILE", cluster.path("admin"))
        .env(
            "IMMUDB_HOOK_REPLICATION_PASSWORD_FILE",
            cluster.path("replication"),
        )
        .env("IMMUDB_HOOK_SPEC_FILE", cluster.write_spec(&sync_spec()))
        .env("IMMUDB_HOOK_HOSTS_FILE", cluster.path("hosts"))
        .env("IMMUDB_HOOK_RESOLV_CONF", cluster.path("resolv.conf"))
        .env("IMMUDB_HOOK_TIMEOUT_SECONDS", "20")
        .args(subcommand)
        .output()
        .await
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

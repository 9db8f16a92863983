//! A release on the doubles, configured as the chart configures it: immudb doubles, their
//! agents in the StatefulSet form (pods named by their DNS names, which the hosts file
//! resolves), the Kubernetes API double with the chart's Role, the write Service (a name the
//! immudb double resolves, at every connection, to the pod labelled primary and Ready, as
//! kube-proxy routes it), a kubelet that probes each pod's readiness from its agent and, for a
//! planned stop, runs the preStop hook before it stops immudb, StatefulSet controllers that
//! roll their pods to a new revision in Kubernetes' order, and a sampler that never sees two
//! writable primaries behind the write Service, nor the write Service routing to two pods.
//! Used by `failover.rs`, `paused.rs` and `switchover.rs`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use immudb_double::Node;
use immudb_hook::client::Client;
use immudb_hook::types::{Credentials, Secret};
use kube_double::{KubeDouble, Rule};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;

pub const NS: &str = "db";
pub const LEASE: &str = "db-immudb-primary";
pub const WRITE_SERVICE: &str = "db-immudb-primary";
pub const READ_STATEFULSET: &str = "db-immudb-read";
/// The primary StatefulSet: named like the Lease, as in the chart.
pub const PRIMARY_STATEFULSET: &str = "db-immudb-primary";
pub const WAIT: Duration = Duration::from_secs(20);
/// The chart's replicaCount in these tests; `failover.maxReplicas` is [`Release::max_replicas`].
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

/// How a release's pods run, beyond the chart's values.
#[derive(Clone, Debug)]
pub struct Harness {
    /// Pods whose agent runs as the hook binary in a child process (signals stop and resume it).
    pub processes: Vec<u8>,
    /// Probes in a row that must fail before the kubelet calls a pod not Ready.
    pub probe_failure_threshold: u32,
}

impl Default for Harness {
    /// Every agent in the test's runtime; a pod is not Ready from its first failed probe.
    fn default() -> Harness {
        Harness {
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
    cooldown: String,
    spec: serde_json::Value,
    /// Extra agent flags.
    flags: Vec<String>,
    /// failover.maxReplicas: the replica pods the Role lets label themselves.
    max_replicas: u8,
    /// Each StatefulSet's template revision: pods created now carry it.
    revisions: [u32; 2],
    harness: Harness,
    /// Set by the sampler when two live nodes were writable at once.
    two_primaries: Arc<AtomicBool>,
    /// Set by the sampler when the write Service routed to two pods at once.
    two_routed: Arc<AtomicBool>,
    samples: Arc<AtomicUsize>,
}

impl Release {
    pub async fn start(cooldown: &str) -> Release {
        Release::start_with(cooldown, sync_spec(), &[]).await
    }

    /// maxReplicas one above replicaCount: a pod the Role names that does not exist must not
    /// hold up an election.
    pub async fn start_with(cooldown: &str, spec: serde_json::Value, flags: &[&str]) -> Release {
        Release::start_bounded(cooldown, spec, flags, REPLICA_COUNT + 1).await
    }

    pub async fn start_bounded(
        cooldown: &str,
        spec: serde_json::Value,
        flags: &[&str],
        max_replicas: u8,
    ) -> Release {
        let harness = Harness::default();
        Release::start_harnessed(cooldown, spec, flags, max_replicas, harness).await
    }

    /// [`Release::start_bounded`] with pods run as `harness` says.
    pub async fn start_harnessed(
        cooldown: &str,
        spec: serde_json::Value,
        flags: &[&str],
        max_replicas: u8,
        harness: Harness,
    ) -> Release {
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
        let pods: Vec<String> = (0..=max_replicas).map(pod_name).collect();
        let names: Vec<&str> = pods.iter().map(String::as_str).collect();
        let kube = KubeDouble::start(Rule::chart(LEASE, READ_STATEFULSET, LEASE, &names))
            .await
            .unwrap();
        let replicas = u32::from(REPLICA_COUNT);
        kube.scale_statefulset(NS, READ_STATEFULSET, replicas, replicas);
        kube.scale_statefulset(NS, PRIMARY_STATEFULSET, 1, 1);
        let revisions = [1, 1];
        for set in [StatefulSet::Primary, StatefulSet::Read] {
            let revision = set.revision(revisions[set as usize]);
            kube.set_revisions(NS, set.name(), &revision, &revision);
        }
        let mut nodes = Vec::new();
        for n in 0..=REPLICA_COUNT {
            nodes.push(cluster.start_node(n).await);
            Release::add_pod(&cluster, &kube, n, &revisions);
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
            cooldown: cooldown.into(),
            spec,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            max_replicas,
            revisions,
            harness,
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

    /// The StatefulSet created pod `node` from its current template: the template's labels, the
    /// revision, its address, its token.
    pub fn add_pod(cluster: &Cluster, kube: &KubeDouble, node: u8, revisions: &[u32; 2]) {
        let set = StatefulSet::of(node);
        let component = if node == 0 { "primary" } else { "read" };
        let revision = set.revision(revisions[set as usize]);
        kube.add_pod(
            NS,
            &pod_name(node),
            &[
                ("app.kubernetes.io/component", component),
                ("controller-revision-hash", &revision),
            ],
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
        Release::add_pod(&self.cluster, &self.kube, node, &self.revisions);
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
        let threshold = self.harness.probe_failure_threshold;
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
            format!("--max-replicas={}", self.max_replicas),
            format!("--primary-statefulset={PRIMARY_STATEFULSET}"),
            format!("--failover-cooldown={}", self.cooldown),
        ];
        // A 1 s Lease unless the test's flags set it.
        let lease = (!self
            .flags
            .iter()
            .any(|f| f.starts_with("--lease-duration=")))
        .then(|| "--lease-duration=1s".to_string());
        let global: Vec<&str> = global.iter().map(String::as_str).collect();
        let extra: Vec<&str> = extra
            .iter()
            .chain(&lease)
            .chain(&self.flags)
            .map(String::as_str)
            .collect();
        let args = self
            .cluster
            .agent_args(node, &[], self.spec.clone(), &global, &extra);
        if self.harness.processes.contains(&node) {
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
        Release::add_pod(&self.cluster, &self.kube, node, &self.revisions);
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

/// A StatefulSet of the release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatefulSet {
    Primary = 0,
    Read = 1,
}

impl StatefulSet {
    pub fn name(self) -> &'static str {
        match self {
            StatefulSet::Primary => PRIMARY_STATEFULSET,
            StatefulSet::Read => READ_STATEFULSET,
        }
    }

    /// The one node 0 belongs to, or the other.
    pub fn of(node: u8) -> StatefulSet {
        if node == 0 {
            StatefulSet::Primary
        } else {
            StatefulSet::Read
        }
    }

    /// Its `n`-th template's revision (`controller-revision-hash`).
    pub fn revision(self, n: u32) -> String {
        format!("{}-{n}", self.name())
    }
}

/// How long the kubelet lets a preStop hook run (the pod's terminationGracePeriodSeconds).
pub const GRACE: Duration = Duration::from_secs(30);

/// A pod's planned stop, as the kubelet ran it.
pub struct Stopped {
    pub node: u8,
    /// What the preStop hook answered (empty when it failed).
    pub answer: String,
    /// The agent's /metrics just before immudb stopped.
    pub metrics: String,
}

impl Stopped {
    /// One series' value in the captured metrics.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

/// One pod's stop under way: its preStop hook runs.
struct Stopping {
    node: u8,
    hook: JoinHandle<Stopped>,
}

/// One StatefulSet's rolling update: its pods from the highest ordinal down, one at a time,
/// each restarted on the new revision and Ready before the next (Kubernetes' RollingUpdate).
struct Rolling {
    set: StatefulSet,
    left: Vec<u8>,
    stopping: Option<Stopping>,
    starting: Option<u8>,
}

impl Release {
    /// A release whose agents get `flags`, with `spec` (for the switchover tests).
    pub async fn start_flagged(spec: serde_json::Value, flags: &[&str]) -> Release {
        Release::start_bounded("1h", spec, flags, REPLICA_COUNT).await
    }

    /// The kubelet begins a planned stop of `node`'s pod: the pod is marked terminating and
    /// the immudb container's preStop hook (GET /prestop on the agent's port) runs, for at most
    /// [`GRACE`]. The handle ends when the hook answered, with the agent's metrics then.
    pub fn begin_stop(&self, node: u8) -> JoinHandle<Stopped> {
        self.kube.terminate_pod(NS, &pod_name(node));
        let agent = format!("http://{}:{AGENT_PORT}", self.cluster.host(node));
        tokio::spawn(async move {
            let http = immudb_hook::tls::http_client_builder(None, GRACE)
                .build()
                .unwrap();
            let get = |path: &'static str| {
                let (http, url) = (&http, format!("{agent}{path}"));
                async move {
                    match http.get(&url).send().await {
                        Ok(response) => response.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    }
                }
            };
            let answer = get("/prestop").await;
            let metrics = get("/metrics").await;
            Stopped {
                node,
                answer,
                metrics,
            }
        })
    }

    /// The kubelet ends the stop: immudb and the agent stop, the pod is deleted, and its
    /// StatefulSet creates it again from its current template, on the same volume; `version`
    /// is the immudb the new image runs, when it changed.
    pub async fn replace(&mut self, node: u8, version: Option<&str>) {
        self.lose(node);
        // The old agent's port closes once its task is cancelled; the new one binds it.
        let port = std::net::SocketAddr::new(self.cluster.ip(node), AGENT_PORT);
        assert!(
            eventually(Duration::from_secs(2), || async {
                tokio::net::TcpStream::connect(port).await.is_err()
            })
            .await,
            "the stopped agent's port closes"
        );
        if let Some(version) = version {
            self.nodes[node as usize].with_state(|s| s.version = version.to_string());
        }
        self.bring_back(node);
    }

    /// A planned restart of `node`'s pod (`kubectl delete pod`, a drain): the preStop hook, then
    /// the stop, then the same pod again.
    pub async fn restart(&mut self, node: u8) -> Stopped {
        let stopped = self.begin_stop(node).await.unwrap();
        self.replace(node, None).await;
        stopped
    }

    /// `set` gets a new template (`helm upgrade` changed it): its controller reports the new
    /// revision, and its pods still run the old one until they are rolled.
    pub fn new_template(&mut self, set: StatefulSet) {
        let old = set.revision(self.revisions[set as usize]);
        self.revisions[set as usize] += 1;
        let new = set.revision(self.revisions[set as usize]);
        self.kube.set_revisions(NS, set.name(), &new, &old);
    }

    /// `helm upgrade` (or `kubectl rollout restart`) of `sets`: each gets a new template and
    /// rolls its pods, concurrently, as its controller does; `version` is the immudb the new
    /// image runs, if it changes. Returns every pod's stop, in the order they ended.
    pub async fn roll(&mut self, sets: &[StatefulSet], version: Option<&str>) -> Vec<Stopped> {
        let mut rolling: Vec<Rolling> = sets
            .iter()
            .map(|&set| {
                self.new_template(set);
                let mut left: Vec<u8> = (0..self.nodes.len() as u8)
                    .filter(|&n| StatefulSet::of(n) == set)
                    .collect();
                left.sort();
                Rolling {
                    set,
                    left,
                    stopping: None,
                    starting: None,
                }
            })
            .collect();
        let deadline = Instant::now() + GRACE * 4;
        let mut stopped = Vec::new();
        while rolling
            .iter()
            .any(|r| !r.left.is_empty() || r.stopping.is_some() || r.starting.is_some())
        {
            if Instant::now() > deadline {
                let mut why = Vec::new();
                for roll in &rolling {
                    if let Some(node) = roll.starting {
                        why.push(format!(
                            "{} not Ready: {:?}",
                            pod_name(node),
                            self.readyz(node).await
                        ));
                    }
                    if let Some(stopping) = &roll.stopping {
                        why.push(format!("{}'s preStop runs", pod_name(stopping.node)));
                    }
                }
                panic!("the rollout did not finish: {}", why.join("; "));
            }
            for roll in &mut rolling {
                if let Some(node) = roll.starting {
                    if !self.kube.ready(NS, &pod_name(node)) {
                        continue;
                    }
                    roll.starting = None;
                }
                if let Some(stopping) = &roll.stopping {
                    if !stopping.hook.is_finished() {
                        continue;
                    }
                    let stopping = roll.stopping.take().unwrap();
                    stopped.push(stopping.hook.await.unwrap());
                    self.replace(stopping.node, version).await;
                    roll.starting = Some(stopping.node);
                    continue;
                }
                if let Some(node) = roll.left.pop() {
                    roll.stopping = Some(Stopping {
                        node,
                        hook: self.begin_stop(node),
                    });
                } else {
                    let revision = roll.set.revision(self.revisions[roll.set as usize]);
                    self.kube
                        .set_revisions(NS, roll.set.name(), &revision, &revision);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stopped
    }
}

/// A client that writes through the write Service all the time, as an application does: one
/// session kept while it works, a new connection (wherever the Service routes then) 20 ms after
/// a failed or unanswered write.
pub struct Writer {
    task: JoinHandle<()>,
    acknowledged: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Writer {
    pub fn start(release: &Release) -> Writer {
        let routed = release.kube.selector(NS, "immudb/role", "primary");
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let acks = acknowledged.clone();
        let task = tokio::spawn(async move {
            let mut session: Option<Client> = None;
            for i in 0.. {
                let key = format!("w-{i}");
                if session.is_none() {
                    session = match routed().into_iter().next() {
                        Some(ip) => open(&ip).await,
                        None => None,
                    };
                }
                let written = match &session {
                    Some(client) => {
                        let set = client.set(key.as_bytes(), key.as_bytes());
                        matches!(
                            tokio::time::timeout(Duration::from_millis(500), set).await,
                            Ok(Ok(_))
                        )
                    }
                    None => false,
                };
                if written {
                    acks.lock().unwrap().push((key, Instant::now()));
                } else {
                    session = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Writer { task, acknowledged }
    }

    pub fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// The keys acknowledged so far.
    pub fn keys(&self) -> Vec<String> {
        let acks = self.acknowledged.lock().unwrap();
        acks.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Stops writing; every acknowledged key, and the longest time between two
    /// acknowledgements.
    pub fn stop(self) -> (Vec<String>, Duration) {
        self.task.abort();
        let acks = self.acknowledged.lock().unwrap();
        let longest = acks
            .windows(2)
            .map(|w| w[1].1 - w[0].1)
            .max()
            .unwrap_or_default();
        (acks.iter().map(|(k, _)| k.clone()).collect(), longest)
    }
}

/// An admin session on appdb at `ip`'s immudb.
async fn open(ip: &str) -> Option<Client> {
    let address = std::net::SocketAddr::new(ip.parse().ok()?, GRPC_PORT);
    let target = immudb_hook::client::Target {
        host: ip.to_string(),
        address,
        tls: None,
    };
    Client::new(&target)
        .ok()?
        .open_session(&admin(), "appdb")
        .await
        .ok()
}

/// A client that reads one key through the read Service all the time: one session kept, and
/// after a failed read a new connection to the next pod the Service routes to, and the read
/// again at once.
pub struct Reader {
    task: JoinHandle<()>,
    /// (reads that returned the key, failed reads, most failures in a row)
    counts: Arc<Mutex<(u64, u64, u64)>>,
}

impl Reader {
    pub fn start(release: &Release, key: &'static str) -> Reader {
        let routed = release.kube.selector(NS, "immudb/role", "replica");
        let counts = Arc::new(Mutex::new((0, 0, 0)));
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            let mut session: Option<Client> = None;
            let mut next = 0usize;
            let mut in_a_row = 0u64;
            loop {
                if session.is_none() {
                    let ips = routed();
                    if !ips.is_empty() {
                        next += 1;
                        session = open(&ips[next % ips.len()]).await;
                    }
                }
                let read = match &session {
                    Some(client) => {
                        let get = client.get(key.as_bytes());
                        matches!(tokio::time::timeout(Duration::from_millis(500), get).await, Ok(Ok(v)) if v == key.as_bytes())
                    }
                    None => false,
                };
                if read {
                    in_a_row = 0;
                } else {
                    in_a_row += 1;
                    session = None;
                }
                {
                    let mut counts = shared.lock().unwrap();
                    if read {
                        counts.0 += 1;
                    } else {
                        counts.1 += 1;
                        counts.2 = counts.2.max(in_a_row);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Reader { task, counts }
    }

    /// Stops reading: (reads that returned the key, failed reads, most failures in a row).
    pub fn stop(self) -> (u64, u64, u64) {
        self.task.abort();
        *self.counts.lock().unwrap()
    }
}

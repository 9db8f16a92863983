//! The release itself: its pods (named and addressed as the chart's StatefulSets name them),
//! how it starts and scales, each pod's agent with the chart's flags, the Lease as the tests read
//! it, and a pod lost and brought back on its volume.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use immudb_double::Node;
use kube_double::{KubeDouble, Rule};

use crate::common::*;

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
    pub(super) revisions: [u32; 2],
    pub(super) harness: Harness,
    /// Set by the sampler when two live nodes were writable at once.
    pub(super) two_primaries: Arc<AtomicBool>,
    /// Set by the sampler when the write Service routed to two pods at once.
    pub(super) two_routed: Arc<AtomicBool>,
    pub(super) samples: Arc<AtomicUsize>,
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

    /// A release whose agents get `flags`, with `spec` (for the switchover tests).
    pub async fn start_flagged(spec: serde_json::Value, flags: &[&str]) -> Release {
        Release::start_bounded("1h", spec, flags, REPLICA_COUNT).await
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

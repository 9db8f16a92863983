//! Failover end to end: agents against immudb doubles and the Kubernetes API double, configured
//! as the chart configures them (the StatefulSet form, pods named by their DNS names, which the
//! hosts file resolves). The write Service is a name the immudb double resolves, at every
//! connection, to the pod labelled primary, as Kubernetes routes a Service. A background check
//! samples every live node all the time: never two writable primaries.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use immudb_double::Node;
use immudb_hook::client::Client;
use immudb_hook::types::{Credentials, Secret};
use kube_double::{KubeDouble, Rule};

const NS: &str = "db";
const LEASE: &str = "db-immudb-primary";
const WRITE_SERVICE: &str = "db-immudb-primary";
const READ_STATEFULSET: &str = "db-immudb-read";
const WAIT: Duration = Duration::from_secs(20);
/// The chart's replicaCount in these tests; `failover.maxReplicas` is [`Release::max_replicas`].
const REPLICA_COUNT: u8 = 2;
/// The most pods a test starts (the primary StatefulSet's and four replicas).
const MOST_NODES: u8 = 5;

fn pod_name(node: u8) -> String {
    match node {
        0 => "db-immudb-primary-0".into(),
        n => format!("db-immudb-read-{}", n - 1),
    }
}

/// The pod's DNS name in its headless Service: its identity in the Lease.
fn pod_host(node: u8) -> String {
    let service = if node == 0 {
        "db-immudb-primary-hl"
    } else {
        "db-immudb-read-hl"
    };
    format!("{}.{service}.{NS}.svc.cluster.local", pod_name(node))
}

fn sync_spec() -> serde_json::Value {
    serde_json::json!({
        "databases": ["appdb"],
        "replication": {"sync": {"enabled": true, "acks": 1}, "allowTxDiscarding": true},
    })
}

fn async_spec() -> serde_json::Value {
    serde_json::json!({"databases": ["appdb"], "replication": {"allowTxDiscarding": true}})
}

/// Three pods (the primary StatefulSet's and two replicas; more once scaled), the API double,
/// the write Service.
struct Release {
    cluster: Cluster,
    kube: KubeDouble,
    nodes: Vec<Node>,
    agents: Vec<Option<RunningAgent>>,
    cooldown: String,
    spec: serde_json::Value,
    /// Extra agent flags.
    flags: Vec<String>,
    /// failover.maxReplicas: the replica pods the Role lets label themselves.
    max_replicas: u8,
    /// Set by the sampler when two live nodes were writable at once.
    two_primaries: Arc<AtomicBool>,
    samples: Arc<AtomicUsize>,
}

impl Release {
    async fn start(cooldown: &str) -> Release {
        Release::start_with(cooldown, sync_spec(), &[]).await
    }

    /// maxReplicas one above replicaCount: a pod the Role names that does not exist must not
    /// hold up an election.
    async fn start_with(cooldown: &str, spec: serde_json::Value, flags: &[&str]) -> Release {
        Release::start_bounded(cooldown, spec, flags, REPLICA_COUNT + 1).await
    }

    async fn start_bounded(
        cooldown: &str,
        spec: serde_json::Value,
        flags: &[&str],
        max_replicas: u8,
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
            cooldown: cooldown.into(),
            spec,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            max_replicas,
            two_primaries: Arc::new(AtomicBool::new(false)),
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
    fn add_pod(cluster: &Cluster, kube: &KubeDouble, node: u8) {
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
    async fn scale_up(&mut self) -> u8 {
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
    fn run_kubelet(&self) {
        for node in 0..self.nodes.len() as u8 {
            self.probe(node);
        }
    }

    /// The kubelet's readiness probe of one pod, for as long as the test runs.
    fn probe(&self, node: u8) {
        let url = format!("http://{}:{AGENT_PORT}/readyz", self.cluster.host(node));
        let (pod, kube) = (pod_name(node), self.kube.handle());
        tokio::spawn(async move {
            let http = immudb_hook::tls::http_client_builder(None, Duration::from_millis(500))
                .build()
                .unwrap();
            loop {
                let ready = match http.get(&url).send().await {
                    Ok(response) => response.status().is_success(),
                    Err(_) => false,
                };
                kube.set_ready(NS, &pod, ready);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    fn agent(&self, node: u8) -> RunningAgent {
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
            "--lease-duration=1s".into(),
            format!("--failover-cooldown={}", self.cooldown),
        ];
        let global: Vec<&str> = global.iter().map(String::as_str).collect();
        let extra: Vec<&str> = extra
            .iter()
            .chain(&self.flags)
            .map(String::as_str)
            .collect();
        self.cluster
            .agent_with(node, &[], self.spec.clone(), &global, &extra)
    }

    /// Every few milliseconds: how many nodes accept writes, i.e. have appdb writable and are
    /// routed to by the write Service. (A returning pod's immudb opens its databases as they
    /// were, writable, before its agent's first poll fences them; no Service routes to it then
    /// and, with sync acks, no replica acknowledges a write there.)
    fn sample_writable_primaries(&self) {
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|n| (n.options.grpc.ip().to_string(), n.state.clone()))
            .collect();
        let routed = self.kube.selector(NS, "immudb/role", "primary");
        let (flag, samples) = (self.two_primaries.clone(), self.samples.clone());
        tokio::spawn(async move {
            loop {
                let selected = routed();
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

    fn holder(&self) -> Option<String> {
        let lease = self.kube.lease(NS, LEASE)?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    }

    fn transitions(&self) -> u64 {
        self.kube
            .lease(NS, LEASE)
            .and_then(|l| l["spec"]["leaseTransitions"].as_u64())
            .unwrap_or(0)
    }

    async fn ready(&self, node: u8) -> bool {
        match &self.agents[node as usize] {
            Some(agent) => agent.ready().await,
            None => false,
        }
    }

    /// What `node`'s agent answers on /readyz (status and body), for a failure message.
    async fn readyz(&self, node: u8) -> (u16, String) {
        match &self.agents[node as usize] {
            Some(agent) => agent.get("/readyz").await,
            None => (0, "no agent".into()),
        }
    }

    /// Every running agent Ready and `node` holding the Lease.
    async fn settled_on(&self, node: u8) -> bool {
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
    fn lose(&mut self, node: u8) {
        self.agents[node as usize] = None;
        self.nodes[node as usize].isolate(true);
        self.kube.remove_pod(NS, &pod_name(node));
    }

    /// The same pod comes back with its volume.
    fn bring_back(&mut self, node: u8) {
        Release::add_pod(&self.cluster, &self.kube, node);
        self.nodes[node as usize].isolate(false);
        self.agents[node as usize] = Some(self.agent(node));
    }

    fn no_two_primaries(&self) {
        assert!(self.samples.load(Ordering::SeqCst) > 10, "the sampler ran");
        assert!(
            !self.two_primaries.load(Ordering::SeqCst),
            "two nodes accepted writes at the same moment"
        );
    }
}

fn admin() -> Credentials {
    Credentials {
        user: "immudb".into(),
        password: Secret::new(ADMIN_PASSWORD),
    }
}

/// A client of the write Service: a session on whichever node it routes to now.
async fn write_session(release: &Release) -> Option<Client> {
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
async fn write(release: &Release, key: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
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

fn holds(node: &Node, key: &str) -> bool {
    node.with_state(|s| {
        s.databases
            .get("appdb")
            .and_then(|d| d.ledger.get(key.as_bytes()))
    })
    .is_some_and(|(_, value)| value == key.as_bytes())
}

fn tx_count(node: &Node) -> u64 {
    node.with_state(|s| s.databases.get("appdb").map_or(0, |d| d.tx_count()))
}

async fn new_primary_elected(release: &Release) -> u8 {
    let mut elected = None;
    let found = eventually(WAIT, || {
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

#[tokio::test]
async fn a_fresh_release_elects_the_primary_statefulsets_pod_and_labels_every_pod() {
    let release = Release::start("1h").await;
    assert!(
        eventually(WAIT, || release.settled_on(0)).await,
        "{:?}",
        release.kube.lease(NS, LEASE)
    );
    assert_eq!(release.transitions(), 0);
    assert_eq!(
        release.kube.pod_labels(NS, &pod_name(0))["immudb/role"],
        "primary"
    );
    for n in [1, 2] {
        assert_eq!(
            release.kube.pod_labels(NS, &pod_name(n))["immudb/role"],
            "replica"
        );
    }
    let tx = write(&release, "k1").await;
    assert!(
        eventually(WAIT, || async {
            release.nodes[1..].iter().all(|n| tx_count(n) >= tx)
        })
        .await
    );
    let primary_agent = release.agents[0].as_ref().unwrap();
    assert_eq!(
        primary_agent
            .metric("immudb_agent_role{agent_role=\"primary\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        primary_agent.metric("immudb_agent_failovers_total").await,
        Some(0.0)
    );
    let replica_agent = release.agents[1].as_ref().unwrap();
    assert_eq!(
        replica_agent
            .metric("immudb_agent_role{agent_role=\"replica\"}")
            .await,
        Some(1.0)
    );
    release.no_two_primaries();
}

#[tokio::test]
async fn losing_the_primary_elects_a_replica_that_holds_every_acknowledged_write() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let key = format!("before-{i}");
        write(&release, &key).await;
        acknowledged.push(key);
    }
    release.lose(0);
    let elected = new_primary_elected(&release).await;
    let other = 3 - elected;
    // Writes through the same Service name succeed again, on the new primary.
    for i in 0..5 {
        let key = format!("after-{i}");
        write(&release, &key).await;
        acknowledged.push(key);
    }
    let new_primary = &release.nodes[elected as usize];
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|k| !holds(new_primary, k))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes missing on the new primary: {lost:?}"
    );
    // The remaining replica follows the new primary with no action.
    assert!(
        eventually(WAIT, || release.settled_on(elected)).await,
        "{:?}",
        release.readyz(other).await
    );
    assert!(
        eventually(WAIT, || async {
            tx_count(&release.nodes[other as usize]) == tx_count(&release.nodes[elected as usize])
        })
        .await
    );
    assert_eq!(release.transitions(), 1);
    let agent = release.agents[elected as usize].as_ref().unwrap();
    assert_eq!(
        agent.metric("immudb_agent_failovers_total").await,
        Some(1.0)
    );
    assert_eq!(
        agent
            .metric("immudb_agent_failover_lost_transactions_total{db=\"appdb\"}")
            .await,
        Some(0.0),
        "sync acks: nothing lost"
    );
    assert_eq!(
        release.kube.pod_labels(NS, &pod_name(elected))["immudb/role"],
        "primary"
    );
    release.no_two_primaries();

    // The old primary returns: a replica of the new primary, Ready once replicating, and a
    // write sent straight to it is refused.
    release.bring_back(0);
    assert!(
        eventually(WAIT, || release.settled_on(elected)).await,
        "{:?}",
        release.readyz(0).await
    );
    assert!(
        eventually(WAIT, || async {
            tx_count(&release.nodes[0]) == tx_count(&release.nodes[elected as usize])
        })
        .await
    );
    assert_eq!(
        release.kube.pod_labels(NS, &pod_name(0))["immudb/role"],
        "replica"
    );
    let direct = Client::new(&target(&release.nodes[0]))
        .unwrap()
        .open_session(&admin(), "appdb")
        .await
        .unwrap();
    let refused = direct.set(b"direct", b"x").await.unwrap_err();
    assert_eq!(
        refused.message,
        "database is read-only because it's a replica"
    );
    let write_tx = write(&release, "after-return").await;
    assert!(eventually(WAIT, || async { tx_count(&release.nodes[0]) >= write_tx }).await);
    assert_eq!(release.transitions(), 1, "no second failover");
    release.no_two_primaries();
}

#[tokio::test]
async fn a_primary_cut_off_from_the_api_fences_itself_before_another_takes_over() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    write(&release, "before").await;
    // The primary's agent can no longer reach the API server; immudb still answers clients.
    release.kube.cut_off("token-0", true);
    let elected = new_primary_elected(&release).await;
    let fenced = release.nodes[0].with_state(|s| s.databases["appdb"].replication.clone());
    assert!(fenced.replica, "the old primary is read-only: {fenced:?}");
    write(&release, "after").await;
    release.no_two_primaries();
    // The API comes back: the old primary follows the new one.
    release.kube.cut_off("token-0", false);
    assert!(
        eventually(WAIT, || release.settled_on(elected)).await,
        "{:?}",
        release.readyz(0).await
    );
    assert!(holds(&release.nodes[0], "after"));
    drop(release.agents.drain(..));
}

#[tokio::test]
async fn a_primary_restart_within_the_lease_and_a_replica_restart_are_no_failover() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    // The primary pod restarts: its agent and immudb are gone for less than the lease.
    release.lose(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.bring_back(0);
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    // A replica restarts (rollout, scale down and up).
    release.lose(2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    release.bring_back(2);
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    write(&release, "k").await;
    assert_eq!(release.transitions(), 0);
    assert_eq!(release.holder(), Some(pod_host(0)));
    for agent in release.agents.iter().flatten() {
        assert_eq!(
            agent.metric("immudb_agent_failovers_total").await,
            Some(0.0)
        );
    }
    release.no_two_primaries();
}

#[tokio::test]
async fn a_failover_is_not_followed_by_another_within_the_cooldown() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    write(&release, "k").await;
    release.lose(0);
    let elected = new_primary_elected(&release).await;
    let other = 3 - elected;
    assert!(eventually(WAIT, || release.settled_on(elected)).await);
    // The new primary is lost too, within the cooldown: the last replica waits and says why.
    release.lose(elected);
    let agent = release.agents[other as usize].as_ref().unwrap();
    assert!(
        eventually(WAIT, || async {
            agent.metric("immudb_agent_primary_reachable").await == Some(0.0)
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        release.holder(),
        Some(pod_host(elected)),
        "no second failover"
    );
    assert_eq!(
        agent
            .metric("immudb_agent_role{agent_role=\"replica\"}")
            .await,
        Some(1.0)
    );
    // The cooldown counts from the Lease's acquireTime: once that is old enough, it takes over.
    let mut lease = release.kube.lease(NS, LEASE).unwrap();
    lease["spec"]["acquireTime"] = "2020-01-01T00:00:00.000000Z".into();
    release.kube.put_lease(NS, lease);
    // Quorum: with one ack among two remaining pods (itself and the old primary, still lost),
    // both must answer; bring the old primary back.
    release.bring_back(0);
    assert!(
        eventually(WAIT, || async { release.holder() == Some(pod_host(other)) }).await,
        "{:?}",
        release.readyz(other).await
    );
    assert_eq!(release.transitions(), 2);
    release.no_two_primaries();
}

#[tokio::test]
async fn an_asynchronous_failover_counts_what_it_lost_and_the_old_primary_is_kept_diverged() {
    let mut release = Release::start_with("1h", async_spec(), &["--allow-data-loss"]).await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    for i in 0..3 {
        write(&release, &format!("replicated-{i}")).await;
    }
    assert!(
        eventually(WAIT, || async {
            release.nodes[1..].iter().all(|n| tx_count(n) == 3)
        })
        .await
    );
    // The replicas stop receiving; the primary acknowledges two more writes, then is lost.
    release.nodes[0].with_state(|s| s.refuse_replication = true);
    write(&release, "only-on-the-old-primary-1").await;
    write(&release, "only-on-the-old-primary-2").await;
    let seen = |n: usize| {
        let agent = release.agents[n].as_ref().unwrap();
        async move {
            agent
                .metric("immudb_agent_lag_transactions{db=\"appdb\"}")
                .await
                == Some(2.0)
        }
    };
    assert!(eventually(WAIT, || seen(1)).await && eventually(WAIT, || seen(2)).await);
    release.lose(0);
    let elected = new_primary_elected(&release).await;
    let agent = release.agents[elected as usize].as_ref().unwrap();
    assert!(
        eventually(WAIT, || async {
            agent.metric("immudb_agent_failovers_total").await == Some(1.0)
        })
        .await
    );
    assert_eq!(
        agent
            .metric("immudb_agent_failover_lost_transactions_total{db=\"appdb\"}")
            .await,
        Some(2.0)
    );
    write(&release, "on-the-new-primary").await;

    // The old primary returns with two committed transactions the new one never had: it is
    // diverged, read-only, not Ready, and keeps them.
    release.nodes[0].with_state(|s| s.refuse_replication = false);
    release.bring_back(0);
    let old = release.agents[0].as_ref().unwrap();
    assert!(
        eventually(WAIT, || async {
            old.metric("immudb_agent_database_state{db=\"appdb\",state=\"diverged\"}")
                .await
                == Some(1.0)
        })
        .await,
        "{:?}",
        old.get("/readyz").await
    );
    let (status, body) = old.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains(
            "database 'appdb' is diverged: holds 5 committed transactions, the primary 4"
        ),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(holds(&release.nodes[0], "only-on-the-old-primary-2"));
    assert_eq!(tx_count(&release.nodes[0]), 5);
    assert!(release.nodes[0].with_state(|s| s.databases["appdb"].replication.replica));
    assert_eq!(
        release.kube.pod_labels(NS, &pod_name(0))["immudb/role"],
        "replica"
    );
    release.no_two_primaries();
}

#[tokio::test]
async fn a_primary_back_on_an_empty_volume_hands_the_lease_to_a_replica_and_copies_it_back() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    for i in 0..4 {
        write(&release, &format!("k{i}")).await;
    }
    assert!(
        eventually(WAIT, || async {
            release.nodes[1..].iter().all(|n| tx_count(n) == 4)
        })
        .await
    );
    // The primary pod restarts within the lease on a new, empty volume.
    release.agents[0] = None;
    drop(release.nodes.remove(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.nodes.insert(0, release.cluster.start_node(0).await);
    release.agents[0] = Some(release.agent(0));
    let elected = new_primary_elected(&release).await;
    assert!(
        eventually(WAIT, || release.settled_on(elected)).await,
        "{:?}",
        release.readyz(0).await
    );
    assert!(eventually(WAIT, || async { tx_count(&release.nodes[0]) == 4 }).await);
    assert!(holds(&release.nodes[0], "k3"));
    write(&release, "after").await;
}

/// The hook binary (the Job, `helm test`) with the release's env and `--lease-name`.
async fn hook_binary(release: &Release, subcommand: &[&str]) -> (Option<i32>, String, String) {
    hook_binary_with(release, &[], subcommand).await
}

/// [`hook_binary`] with more env.
async fn hook_binary_with(
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

#[tokio::test]
async fn after_a_failover_the_job_and_helm_test_find_the_primary_through_the_lease() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    write(&release, "k").await;
    release.lose(0);
    let elected = new_primary_elected(&release).await;
    assert!(eventually(WAIT, || release.settled_on(elected)).await);
    let primary = pod_host(elected);
    let named = format!("primary: {primary} (holder of Lease {LEASE})\n");
    // helm test while the old primary's pod is Pending on its lost node: it is one of the
    // replicas the Lease implies and never answers; the test passes and names it.
    let (code, stdout, stderr) = hook_binary_with(
        &release,
        &[("IMMUDB_HOOK_VERIFY_SKIP_AFTER_SECONDS", "2")],
        &["verify", "--database=appdb"],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.starts_with(&named), "{stdout}");
    let lost = pod_host(0);
    let line = stdout
        .lines()
        .find(|l| l.contains(&lost))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("skipped, not running: no answer in 2 s"),
        "{line}"
    );
    assert!(
        stdout.contains(&format!(
            "1 replica(s) returned the probe key; 1 not running, skipped: {lost}"
        )),
        "{stdout}"
    );
    // helm upgrade's Job: the lost pod is a replica now that cannot be reached; the new
    // primary and the other replica are converged already.
    release.bring_back(0);
    assert!(eventually(WAIT, || release.settled_on(elected)).await);
    let (code, stdout, stderr) = hook_binary(&release, &["converge"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.starts_with(&named), "{stdout}");
    assert!(stdout.contains("already converged"), "{stdout}");
    let (code, stdout, stderr) = hook_binary(&release, &["verify", "--database=appdb"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.starts_with(&named), "{stdout}");
    assert!(
        stdout.contains("2 replica(s) returned the probe key"),
        "{stdout}"
    );
    release.no_two_primaries();
}

#[tokio::test]
async fn a_pod_added_by_kubectl_scale_up_to_max_replicas_labels_itself_and_serves_reads() {
    let mut release = Release::start_bounded("1h", sync_spec(), &[], REPLICA_COUNT + 1).await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    let tx = write(&release, "before-scale").await;
    // kubectl scale --replicas=3: read-2 is beyond replicaCount, within maxReplicas.
    let added = release.scale_up().await;
    assert!(
        eventually(WAIT, || release.settled_on(0)).await,
        "{:?}",
        release.readyz(added).await
    );
    assert_eq!(
        release
            .kube
            .pod_labels(NS, &pod_name(added))
            .get("immudb/role"),
        Some(&"replica".to_string())
    );
    let ip = release.cluster.host(added);
    assert!(
        eventually(WAIT, || async {
            release
                .kube
                .selected_ips(NS, "immudb/role", "replica")
                .contains(&ip)
        })
        .await,
        "the read Service routes to it"
    );
    assert!(tx_count(&release.nodes[added as usize]) >= tx);
    // One more, beyond maxReplicas: it replicates, but may not label itself, so no Service
    // routes to it.
    let beyond = release.scale_up().await;
    let agent = release.agents[beyond as usize].as_ref().unwrap();
    assert!(
        eventually(WAIT, || agent.ready()).await,
        "{:?}",
        agent.get("/readyz").await
    );
    assert!(holds(&release.nodes[beyond as usize], "before-scale"));
    assert_eq!(
        release
            .kube
            .pod_labels(NS, &pod_name(beyond))
            .get("immudb/role"),
        None
    );
    assert!(!release
        .kube
        .selected_ips(NS, "immudb/role", "replica")
        .contains(&release.cluster.host(beyond)));
    release.no_two_primaries();
}

#[tokio::test]
async fn a_pod_added_by_kubectl_scale_counts_in_the_election_it_may_hold_acknowledged_writes() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    let added = release.scale_up().await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    // The declared replicas are cut off; the added pod alone acknowledges the next write.
    release.nodes[1].isolate(true);
    release.nodes[2].isolate(true);
    write(&release, "acknowledged-by-the-added-pod").await;
    assert!(holds(
        &release.nodes[added as usize],
        "acknowledged-by-the-added-pod"
    ));
    // The primary's node and the added pod's are lost; the declared replicas come back.
    release.lose(0);
    release.lose(added);
    release.nodes[1].isolate(false);
    release.nodes[2].isolate(false);
    // With 1 ack among 3 pods that may hold acknowledged writes, all 3 must answer: electing
    // read-0 or read-1 would lose the write. The Lease expires after 1 s; they keep waiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(release.holder(), Some(pod_host(0)), "nobody took the Lease");
    for n in [1, 2] {
        assert!(!holds(&release.nodes[n], "acknowledged-by-the-added-pod"));
    }
    // The added pod returns: it holds the write and is elected.
    release.bring_back(added);
    assert!(
        eventually(WAIT, || release.settled_on(added)).await,
        "{:?}",
        release.kube.lease(NS, LEASE)
    );
    assert!(holds(
        &release.nodes[added as usize],
        "acknowledged-by-the-added-pod"
    ));
    write(&release, "after").await;
    release.no_two_primaries();
}

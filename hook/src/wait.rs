//! Waiting for a node: its name resolves, its gRPC port accepts a connection, `/readyz` answers on
//! the metrics port and `ServerInfo` answers. Every step is retried until the deadline; each attempt
//! starts over from name resolution, because a restarted pod comes back with a new address.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::config::ResolveHosts;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, Resolver};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::client::{Client, Target};
use crate::config::Topology;
use crate::retry::{self, Retried, Transient};
use crate::tls;
use crate::types::Role;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a node is not ready yet. All of these pass with time, so all are retried.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("name {host} does not resolve: {reason}")]
    Resolve { host: String, reason: String },
    #[error("gRPC port {address} does not accept connections: {reason}")]
    Connect { address: SocketAddr, reason: String },
    #[error("/readyz on {address} is not ready: {reason}")]
    Readyz { address: SocketAddr, reason: String },
    #[error("ServerInfo on {address} failed: {reason}")]
    ServerInfo { address: SocketAddr, reason: String },
}

impl Transient for NotReady {
    fn is_transient(&self) -> bool {
        true
    }
}

/// Resolves names the way the system resolver does: the hosts file first (a name it knows is
/// answered from it alone, as NSS "files" does), then the nameservers of resolv.conf with its
/// search domains and ndots. A fresh resolver per lookup keeps no negative cache, so a
/// headless-Service name that appears a moment later is seen at once.
#[derive(Clone, Debug)]
pub struct SystemResolver {
    hosts_file: Arc<Path>,
    resolv_conf: Arc<Path>,
}

impl SystemResolver {
    pub fn new(topology: &Topology) -> SystemResolver {
        SystemResolver {
            hosts_file: topology.hosts_file.clone().into(),
            resolv_conf: topology.resolv_conf.clone().into(),
        }
    }

    pub async fn resolve(&self, host: &str) -> Result<IpAddr, NotReady> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(ip);
        }
        let failed = |reason: String| NotReady::Resolve {
            host: host.to_string(),
            reason,
        };
        let mut hosts = Hosts::default();
        if let Ok(file) = std::fs::File::open(&self.hosts_file) {
            hosts
                .read_hosts_conf(file)
                .map_err(|e| failed(format!("reading {}: {e}", self.hosts_file.display())))?;
        }
        if let Ok(name) = Name::from_str(host) {
            for record_type in [RecordType::A, RecordType::AAAA] {
                let known = hosts.lookup_static_host(&Query::query(name.clone(), record_type));
                let ip = known.and_then(|l| l.answers().iter().find_map(|r| r.data.ip_addr()));
                if let Some(ip) = ip {
                    return Ok(ip);
                }
            }
        }
        let conf = std::fs::read(&self.resolv_conf).unwrap_or_default();
        let (config, mut options) = hickory_resolver::system_conf::parse_resolv_conf(conf)
            .map_err(|e| failed(format!("reading {}: {e}", self.resolv_conf.display())))?;
        options.use_hosts_file = ResolveHosts::Never;
        options.cache_size = 0;
        let mut resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        resolver.set_hosts(Arc::new(hosts));
        let lookup = resolver
            .lookup_ip(host)
            .await
            .map_err(|e| failed(e.to_string()))?;
        lookup
            .iter()
            .next()
            .ok_or_else(|| failed("no address records".into()))
    }
}

/// A node that answered every readiness check, with the connection that reached it.
#[derive(Clone)]
pub struct ReadyNode {
    pub address: SocketAddr,
    pub client: Client,
    pub version: String,
}

/// reqwest looks a node's name up here and gets the address this attempt already resolved: one
/// lookup per attempt, `/readyz` asked of the same pod as the gRPC check, and TLS still verifies
/// the name in the URL.
#[derive(Clone, Default)]
struct PinnedAddress(Arc<Mutex<Option<IpAddr>>>);

impl reqwest::dns::Resolve for PinnedAddress {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let pinned = *self.0.lock().expect("pinned address lock");
        Box::pin(async move {
            let ip = pinned.ok_or("no address resolved yet")?;
            // The connector takes the port from the URL.
            Ok(Box::new(std::iter::once(SocketAddr::new(ip, 0))) as reqwest::dns::Addrs)
        })
    }
}

/// The `/readyz` check of one node: HTTP, or HTTPS when the servers serve TLS.
struct Readyz {
    http: reqwest::Client,
    pinned: PinnedAddress,
    url: String,
}

impl Readyz {
    fn new(topology: &Topology, host: &str) -> Result<Readyz, String> {
        let pinned = PinnedAddress::default();
        let http = tls::http_client_builder(topology.tls.as_ref(), PROBE_TIMEOUT)
            .dns_resolver(Arc::new(pinned.clone()))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for /readyz: {e}"))?;
        let scheme = if topology.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let authority = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{host}]"),
            _ => host.to_string(),
        };
        let url = format!("{scheme}://{authority}:{}/readyz", topology.metrics_port);
        Ok(Readyz { http, pinned, url })
    }

    async fn check(&self, ip: IpAddr, metrics: SocketAddr) -> Result<(), NotReady> {
        *self.pinned.0.lock().expect("pinned address lock") = Some(ip);
        let not_ready = |reason: String| NotReady::Readyz {
            address: metrics,
            reason,
        };
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| not_ready(error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(not_ready(format!("HTTP {}", response.status())));
        }
        Ok(())
    }
}

/// An error with its causes: reqwest's own text rarely says why (refused, certificate, ...).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn probe(
    resolver: &SystemResolver,
    readyz: &Readyz,
    topology: &Topology,
    host: &str,
) -> Result<ReadyNode, NotReady> {
    let ip = resolver.resolve(host).await?;
    let grpc = SocketAddr::new(ip, topology.grpc_port);
    match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(grpc)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(NotReady::Connect {
                address: grpc,
                reason: e.to_string(),
            })
        }
        Err(_) => {
            return Err(NotReady::Connect {
                address: grpc,
                reason: "timed out".into(),
            })
        }
    }
    readyz
        .check(ip, SocketAddr::new(ip, topology.metrics_port))
        .await?;
    let server_info_failed = |reason: String| NotReady::ServerInfo {
        address: grpc,
        reason,
    };
    let target = Target {
        host: host.to_string(),
        address: grpc,
        tls: topology.tls.clone(),
    };
    let client = Client::new(&target).map_err(|e| server_info_failed(e.to_string()))?;
    let version = client
        .server_version()
        .await
        .map_err(|e| server_info_failed(e.to_string()))?;
    Ok(ReadyNode {
        address: grpc,
        client,
        version,
    })
}

/// Why waiting for a node ended without it.
#[derive(Debug, thiserror::Error)]
pub enum WaitFailed {
    /// It did not pass every check before the deadline: not running (yet), or unreachable.
    #[error("not ready before the deadline: {}", last.as_deref().unwrap_or("no attempt finished"))]
    NotRunning { last: Option<String> },
    /// It could not even be checked.
    #[error("{0}")]
    Broken(String),
}

impl From<WaitFailed> for String {
    fn from(failed: WaitFailed) -> String {
        failed.to_string()
    }
}

/// Waits until `host` is ready or the deadline passes; the error names the last check that failed.
pub async fn wait_for(
    resolver: &SystemResolver,
    topology: &Topology,
    host: &str,
    deadline: Instant,
) -> Result<ReadyNode, WaitFailed> {
    tracing::info!("waiting for the node");
    let started = Instant::now();
    // One HTTP client for every attempt: building one per probe would redo its setup each retry.
    let readyz = Readyz::new(topology, host).map_err(WaitFailed::Broken)?;
    match retry::until(deadline, || probe(resolver, &readyz, topology, host)).await {
        Ok(ready) => {
            tracing::info!(
                address = %ready.address,
                version = %ready.version,
                waited_ms = started.elapsed().as_millis() as u64,
                "node is ready"
            );
            Ok(ready)
        }
        Err(Retried::Failed(e)) => Err(WaitFailed::Broken(e.to_string())),
        Err(Retried::Deadline { last }) => Err(WaitFailed::NotRunning { last }),
    }
}

/// A node being waited for, in its own task.
pub type Waiting = JoinHandle<Result<ReadyNode, WaitFailed>>;

/// Starts waiting for every node concurrently, each in its own span: the primary until
/// `deadline`, the replicas until `replica_deadline`.
pub fn spawn_waits(
    topology: &Topology,
    deadline: Instant,
    replica_deadline: Instant,
) -> (Waiting, Vec<(String, Waiting)>) {
    let resolver = SystemResolver::new(topology);
    let spawn = |role: Role, host: &str, deadline: Instant| {
        let (resolver, topology, host) = (resolver.clone(), topology.clone(), host.to_string());
        let span = node_span(role, &host);
        tokio::spawn(
            async move { wait_for(&resolver, &topology, &host, deadline).await }.instrument(span),
        )
    };
    let primary = spawn(Role::Primary, &topology.primary, deadline);
    let replicas = topology
        .replicas
        .iter()
        .map(|host| (host.clone(), spawn(Role::Replica, host, replica_deadline)))
        .collect();
    (primary, replicas)
}

pub async fn joined(waiting: Waiting) -> Result<ReadyNode, WaitFailed> {
    waiting
        .await
        .unwrap_or_else(|e| Err(WaitFailed::Broken(format!("waiting task failed: {e}"))))
}

pub fn node_span(role: Role, host: &str) -> tracing::Span {
    tracing::info_span!("node", %role, host = %host)
}

/// The agent beside `node` said it is not Ready (or did not answer): it may be soon.
#[derive(Debug, thiserror::Error)]
#[error("its agent says it is not Ready: {0}")]
pub struct AgentNotReady(String);

impl Transient for AgentNotReady {
    fn is_transient(&self) -> bool {
        true
    }
}

/// The client that asks agents (plain HTTP), built once per command, not per question.
pub fn agent_http() -> Result<reqwest::Client, String> {
    tls::http_client_builder(None, PROBE_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client for the agents: {e}"))
}

/// Asks the agent beside `node` (plain HTTP on `port`) for its verdict: 200 means the node
/// serves correct, current data; anything else says why not.
pub async fn agent_ready(
    http: &reqwest::Client,
    node: &ReadyNode,
    port: u16,
) -> Result<(), AgentNotReady> {
    let url = format!("http://{}/readyz", SocketAddr::new(node.address.ip(), port));
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| AgentNotReady(format!("{url}: {e}")))?;
    if response.status().is_success() {
        return Ok(());
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Err(AgentNotReady(format!(
        "{url} answered {status}: {}",
        body.lines().next().unwrap_or_default()
    )))
}

/// Waits until the agent beside `node` says it is Ready, until `deadline`.
pub async fn until_agent_ready(
    node: &ReadyNode,
    port: u16,
    deadline: Instant,
) -> Result<(), String> {
    let http = agent_http()?;
    retry::until(deadline, || agent_ready(&http, node, port))
        .await
        .map_err(|e| e.to_string())
}

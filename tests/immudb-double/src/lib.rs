//! An in-process immudb test double. Each [`Node`] serves the hook's proto over gRPC on one address
//! and `/readyz` over HTTP on another, like immudb's ports 3322 and 9497, and enforces the rules in
//! `shared/immudb-facts.md`: credentials, per-server sessions and tokens, permissions, names,
//! database settings applied and validated as immudb 1.11.1 does ([`options`]), ifNotExists,
//! read-only replicas. Replica databases copy their primary's
//! entries when the primary is reachable on the [`Network`], runs the same version and accepts the
//! replication user with Admin permission, as immudb's replicator does. Writes cost what immudb's
//! do: Set and replicateTx answer after the database's syncer batched them into one fsync, and
//! concurrent replicateTx calls are ordered and limited as immudb's store does ([`commits`]).

/// immudb names two methods in lower camel case (exportTx, replicateTx): their generated stream
/// type keeps that case.
#[allow(non_camel_case_types)]
pub mod proto {
    tonic::include_proto!("immudb.schema");
}
pub mod commits;
mod faults;
pub mod ledger;
pub mod options;
pub mod replicator;
pub mod rules;
mod server;
mod state;
pub mod storage;
mod transactions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use faults::Faults;
pub use ledger::Ledger;
pub use state::{Database, State, User, ADMIN_USER};

/// How replicas find their primary: `host:port` as written in a replica's settings → that node.
/// `host:port` → the state of every running node.
type Registry = HashMap<String, Arc<Mutex<State>>>;

/// A name whose address is looked up at every connection, like a Kubernetes Service.
type Resolve = Arc<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Network {
    nodes: Arc<Mutex<Registry>>,
    aliases: Arc<Mutex<HashMap<String, Resolve>>>,
}

impl Network {
    /// `name` reaches whichever host `resolve` names at each connection (None: nobody), as a
    /// Service reaches the pods its selector matches.
    pub fn alias(&self, name: &str, resolve: impl Fn() -> Option<String> + Send + Sync + 'static) {
        self.aliases
            .lock()
            .expect("network lock")
            .insert(name.to_string(), Arc::new(resolve));
    }

    fn register(&self, host: &str, port: u16, state: Arc<Mutex<State>>) {
        let mut nodes = self.nodes.lock().expect("network lock");
        nodes.insert(format!("{host}:{port}"), state);
    }

    fn unregister(&self, host: &str, port: u16) {
        self.nodes
            .lock()
            .expect("network lock")
            .remove(&format!("{host}:{port}"));
    }

    fn find(&self, host: &str, port: u32) -> Option<Arc<Mutex<State>>> {
        let alias = self
            .aliases
            .lock()
            .expect("network lock")
            .get(host)
            .cloned();
        let host = match alias {
            Some(resolve) => resolve()?,
            None => host.to_string(),
        };
        self.nodes
            .lock()
            .expect("network lock")
            .get(&format!("{host}:{port}"))
            .cloned()
    }
}

/// One fsync on the machine the facts were measured on (immudb 1.10-1.11, loopback, 2 shared
/// cores): a single writer waited 8.3 ms at syncFrequency 20 ms (a 5 ms quarter, so about 3.3 ms
/// for the sync), 5.2 ms at 5 ms and about 4 ms at 1 ms; a one-at-a-time restore took 7.6 ms
/// per transaction at 20 ms.
pub const FSYNC: Duration = Duration::from_millis(3);

/// What a node is started with.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub version: String,
    pub admin_password: String,
    pub latency: Duration,
    pub unavailable_first: usize,
    pub max_sessions: usize,
    /// systemdb replication: the server is a read-only replica of this `host:port` primary.
    pub server_replica_of: Option<(String, u16)>,
    /// How often the node looks for replicators whose retry sleep is over (immudb fetches again
    /// at once after a success; the double at its next look).
    pub replication_tick: Duration,
    /// The replicators' retry delays between failed fetches, "no new transactions" included:
    /// [`replicator::Backoff::IMMUDB`] (1 s, 2 minutes) as on a real server; the default, 25 ms
    /// to 800 ms, keeps the test suite fast (sleeps of 50, 100, 200, 400 and 800 ms).
    pub replication_retry: replicator::Backoff,
    /// Serve gRPC and the metrics port over TLS with this certificate and key (PEM), as immudb
    /// does with IMMUDB_CERTIFICATE and IMMUDB_PKEY.
    pub tls: Option<TlsIdentity>,
    /// What one sync's fsync costs beyond the syncer's wait (see [`commits`]).
    pub fsync: Duration,
}

#[derive(Clone, Debug)]
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl NodeOptions {
    pub fn new(grpc: SocketAddr, metrics: SocketAddr) -> NodeOptions {
        NodeOptions {
            grpc,
            metrics,
            version: "1.11.1".to_string(),
            admin_password: "immudb".to_string(),
            latency: Duration::ZERO,
            unavailable_first: 0,
            max_sessions: 100,
            server_replica_of: None,
            replication_tick: Duration::from_millis(50),
            replication_retry: replicator::Backoff {
                min: Duration::from_millis(25),
                max: Duration::from_millis(800),
            },
            tls: None,
            fsync: FSYNC,
        }
    }
}

/// A running double node; dropping it stops it.
pub struct Node {
    pub options: NodeOptions,
    pub state: Arc<Mutex<State>>,
    pub faults: Arc<Faults>,
    network: Network,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Binds both ports and starts serving; returns once the node accepts connections.
    pub async fn start(options: NodeOptions, network: &Network) -> std::io::Result<Node> {
        let mut state = State::new(&options.admin_password);
        state.version.clone_from(&options.version);
        if let Some((host, port)) = &options.server_replica_of {
            state.server_replica = true;
            let defaultdb = state.databases.get_mut("defaultdb").expect("defaultdb");
            defaultdb.replication = options::Replication {
                replica: true,
                primary_database: "defaultdb".into(),
                primary_host: host.clone(),
                primary_port: u32::from(*port),
                primary_username: ADMIN_USER.into(),
                primary_password: options.admin_password.clone(),
                // IMMUDB_REPLICATION_* defaults.
                prefetch_tx_buffer_size: options::DEFAULT_PREFETCH_TX_BUFFER_SIZE,
                replication_commit_concurrency: options::DEFAULT_REPLICATION_COMMIT_CONCURRENCY,
                ..Default::default()
            };
            defaultdb.start_replicator();
        }
        let state = Arc::new(Mutex::new(state));
        let faults = Arc::new(Faults {
            latency: options.latency,
            unavailable_first: AtomicUsize::new(options.unavailable_first),
            ..Default::default()
        });
        let service = server::Service {
            state: state.clone(),
            faults: faults.clone(),
            max_sessions: options.max_sessions,
            sync_cost: commits::SyncCost {
                fsync: options.fsync,
            },
        };
        let grpc_listener = TcpListener::bind(options.grpc).await?;
        let metrics_listener = TcpListener::bind(options.metrics).await?;
        let mut builder = tonic::transport::Server::builder();
        let mut https = None;
        if let Some(tls) = &options.tls {
            let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .map_err(std::io::Error::other)?;
            https = Some(tls_acceptor(tls)?);
        }
        let grpc = tokio::spawn(async move {
            // Without TCP_NODELAY every small response waits for a delayed ACK (~40 ms); immudb's
            // Go server sets it, so the double does too.
            let incoming = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                |accepted| {
                    accepted.inspect(|stream| {
                        let _ = stream.set_nodelay(true);
                    })
                },
            );
            let _ = builder
                .add_service(proto::immu_service_server::ImmuServiceServer::new(service))
                .serve_with_incoming(incoming)
                .await;
        });
        let metrics = tokio::spawn(serve_health(
            metrics_listener,
            https,
            state.clone(),
            faults.clone(),
        ));
        let replicator = tokio::spawn(replicator::run(
            state.clone(),
            options.grpc.to_string(),
            network.clone(),
            options.replication_tick,
            options.replication_retry,
        ));
        network.register(
            &options.grpc.ip().to_string(),
            options.grpc.port(),
            state.clone(),
        );
        Ok(Node {
            options,
            state,
            faults,
            network: network.clone(),
            tasks: vec![grpc, metrics, replicator],
        })
    }

    /// Cuts the node off (true) as a lost node is, keeping its data, or brings it back
    /// (false) as the same pod returning with its volume: while cut off, every call answers
    /// Unavailable (calls waiting for a commit too), the metrics port answers nothing, no
    /// replicator reaches it and its own replicators pause.
    pub fn isolate(&self, cut: bool) {
        let (host, port) = (self.options.grpc.ip().to_string(), self.options.grpc.port());
        set_stopped(&self.state, &self.faults, cut);
        if cut {
            self.network.unregister(&host, port);
        } else {
            self.network.register(&host, port, self.state.clone());
        }
    }

    /// Stops the whole process (true) as SIGSTOP, a long GC pause or a frozen VM do, or resumes
    /// it (false). While stopped its connections stay open and new ones are accepted (the kernel
    /// answers), but every RPC and the metrics port wait, its own replicators fetch nothing, and
    /// the replicators of other nodes connected to it hang in their fetch; when it resumes,
    /// everything continues where it stopped, over the same connections.
    pub fn pause(&self, paused: bool) {
        self.state.lock().expect("double state lock").paused = paused;
        self.faults.pause.set(paused);
    }

    /// Runs `f` on the node's state, e.g. to seed a database or read what the hook did.
    pub fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("double state lock"))
    }
}

/// Marks a node's process gone (true: its calls answer Unavailable, calls waiting for a commit
/// end now, as a dead process's connections do, replicators connected to it fail, a pause
/// ends with it) or back (false). `Node::isolate` and `Drop` use it; a test stopping a node from
/// inside a callback, where it holds only the node's state and faults, too.
pub fn set_stopped(state: &Mutex<State>, faults: &Faults, stopped: bool) {
    faults
        .stopped
        .store(stopped, std::sync::atomic::Ordering::SeqCst);
    let mut state = state.lock().expect("double state lock");
    state.isolated = stopped;
    if stopped {
        state.paused = false;
        faults.pause.set(false);
    }
    for db in state.databases.values() {
        db.commits.notify();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        set_stopped(&self.state, &self.faults, true);
        self.network.unregister(
            &self.options.grpc.ip().to_string(),
            self.options.grpc.port(),
        );
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// immudb's port 9497: `/readyz`, `/livez` and `/initz` answer 200 as soon as the process is up,
/// whatever the replicators do; `/metrics` has the replication gauges. With server TLS on, immudb
/// serves this port over HTTPS too.
async fn serve_health(
    listener: TcpListener,
    https: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<Mutex<State>>,
    faults: Arc<Faults>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (https, state, faults) = (https.clone(), state.clone(), faults.clone());
        tokio::spawn(async move {
            // A stopped process accepts (its kernel does) but answers only once it resumes.
            faults.pause.wait().await;
            match https {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        answer_health(stream, &state).await;
                    }
                }
                None => answer_health(stream, &state).await,
            }
        });
    }
}

fn tls_acceptor(tls: &TlsIdentity) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(std::io::Error::other)?;
    let key =
        PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).map_err(std::io::Error::other)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(std::io::Error::other)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn answer_health<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    state: &Mutex<State>,
) {
    // A stopped server's port answers nothing.
    if state.lock().expect("double state lock").isolated {
        return;
    }
    let mut buffer = [0u8; 1024];
    let n = stream.read(&mut buffer).await.unwrap_or(0);
    let request = String::from_utf8_lossy(&buffer[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/readyz" | "/livez" | "/initz" => ("200 OK", String::new()),
        "/metrics" => (
            "200 OK",
            replicator::metrics(&state.lock().expect("double state lock")),
        ),
        _ => ("404 Not Found", String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

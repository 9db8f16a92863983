//! An in-process immudb test double. Each [`Node`] serves the hook's proto over gRPC on one address
//! and `/readyz` over HTTP on another, like immudb's ports 3322 and 9497, and enforces the rules in
//! `shared/immudb-facts.md`: credentials, per-server sessions and tokens, permissions, names,
//! replication settings, ifNotExists, read-only replicas. Replica databases copy their primary's
//! entries when the primary is reachable on the [`Network`], runs the same version and accepts the
//! replication user with Admin permission, as immudb's replicator does.

/// immudb names two methods in lower camel case (exportTx, replicateTx): their generated stream
/// type keeps that case.
#[allow(non_camel_case_types)]
pub mod proto {
    tonic::include_proto!("immudb.schema");
}
pub mod ledger;
pub mod rules;
mod server;
mod state;
mod transactions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use ledger::Ledger;
pub use server::Faults;
pub use state::{Database, State, User, ADMIN_USER};

/// How replicas find their primary: `host:port` as written in a replica's settings → that node.
/// `host:port` → (version, state) of every running node.
type Registry = HashMap<String, (String, Arc<Mutex<State>>)>;

#[derive(Clone, Default)]
pub struct Network {
    nodes: Arc<Mutex<Registry>>,
}

impl Network {
    fn register(&self, host: &str, port: u16, version: &str, state: Arc<Mutex<State>>) {
        let mut nodes = self.nodes.lock().expect("network lock");
        nodes.insert(format!("{host}:{port}"), (version.to_string(), state));
    }

    fn unregister(&self, host: &str, port: u16) {
        self.nodes
            .lock()
            .expect("network lock")
            .remove(&format!("{host}:{port}"));
    }

    fn find(&self, host: &str, port: u32) -> Option<(String, Arc<Mutex<State>>)> {
        self.nodes
            .lock()
            .expect("network lock")
            .get(&format!("{host}:{port}"))
            .cloned()
    }
}

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
    /// How often replica databases poll their primary.
    pub replication_interval: Duration,
    /// Serve gRPC and the metrics port over TLS with this certificate and key (PEM), as immudb
    /// does with IMMUDB_CERTIFICATE and IMMUDB_PKEY.
    pub tls: Option<TlsIdentity>,
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
            replication_interval: Duration::from_millis(50),
            tls: None,
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
        if let Some((host, port)) = &options.server_replica_of {
            state.server_replica = true;
            let defaultdb = state.databases.get_mut("defaultdb").expect("defaultdb");
            defaultdb.replication = rules::Replication {
                replica: true,
                primary_database: "defaultdb".into(),
                primary_host: host.clone(),
                primary_port: u32::from(*port),
                primary_username: ADMIN_USER.into(),
                primary_password: options.admin_password.clone(),
                ..Default::default()
            };
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
            version: options.version.clone(),
            max_sessions: options.max_sessions,
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
        let metrics = tokio::spawn(serve_health(metrics_listener, https));
        let replicator = tokio::spawn(replicate(
            state.clone(),
            network.clone(),
            options.version.clone(),
            options.replication_interval,
        ));
        network.register(
            &options.grpc.ip().to_string(),
            options.grpc.port(),
            &options.version,
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

    /// Runs `f` on the node's state, e.g. to seed a database or read what the hook did.
    pub fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("double state lock"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.network.unregister(
            &self.options.grpc.ip().to_string(),
            self.options.grpc.port(),
        );
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// immudb's port 9497: `/readyz`, `/livez` and `/initz` answer 200 as soon as the process is up.
/// With server TLS on, immudb serves this port over HTTPS too.
async fn serve_health(listener: TcpListener, https: Option<tokio_rustls::TlsAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let https = https.clone();
        tokio::spawn(async move {
            match https {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        answer_health(stream).await;
                    }
                }
                None => answer_health(stream).await,
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

async fn answer_health<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    let mut buffer = [0u8; 1024];
    let n = stream.read(&mut buffer).await.unwrap_or(0);
    let request = String::from_utf8_lossy(&buffer[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let status = match path {
        "/readyz" | "/livez" | "/initz" => "200 OK",
        _ => "404 Not Found",
    };
    let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Transactions a replica database fetches from its primary per round.
const REPLICATION_BATCH: u64 = 256;

/// Replicates each replica database from its primary, transaction by transaction through the
/// exported form, when immudb would: the primary is reachable, runs the same version, and the
/// replication user has Admin (or SysAdmin) there. A transaction that does not chain (a diverged
/// replica) stops that database's replication, as in immudb.
async fn replicate(
    state: Arc<Mutex<State>>,
    network: Network,
    version: String,
    interval: Duration,
) {
    loop {
        tokio::time::sleep(interval).await;
        let replicas: Vec<(String, rules::Replication, u64)> = {
            let state = state.lock().expect("double state lock");
            state
                .databases
                .iter()
                .filter(|(_, db)| db.replication.replica && !db.replication.primary_host.is_empty())
                .map(|(name, db)| (name.clone(), db.replication.clone(), db.tx_count()))
                .collect()
        };
        for (name, settings, have) in replicas {
            let Some((primary_version, primary)) =
                network.find(&settings.primary_host, settings.primary_port)
            else {
                continue;
            };
            if primary_version != version {
                continue;
            }
            let fetched = {
                let primary = primary.lock().expect("double state lock");
                let allowed = primary
                    .users
                    .get(&settings.primary_username)
                    .is_some_and(|u| {
                        u.active
                            && u.password == settings.primary_password
                            && (u.sys_admin
                                || u.permissions.get(&settings.primary_database)
                                    == Some(&rules::PERMISSION_ADMIN))
                    });
                let source = primary.databases.get(&settings.primary_database);
                match source {
                    Some(source) if allowed => {
                        let last = source.tx_count().min(have + REPLICATION_BATCH);
                        let messages: Vec<Vec<u8>> = (have + 1..=last)
                            .filter_map(|id| source.ledger.transaction(id).map(|t| t.to_message()))
                            .collect();
                        Some((messages, primary.users.clone()))
                    }
                    _ => None,
                }
            };
            let Some((messages, users)) = fetched else {
                continue;
            };
            let mut state = state.lock().expect("double state lock");
            let server_replica = state.server_replica;
            if let Some(db) = state.databases.get_mut(&name) {
                for message in messages {
                    let applied = immudb_txlog::ExportedTx::from_message(&message)
                        .ok()
                        .and_then(|tx| db.ledger.replicate(tx).ok());
                    if applied.is_none() {
                        break;
                    }
                }
            }
            if server_replica {
                // systemdb replication carries users and their passwords too.
                state.users = users;
            }
        }
    }
}

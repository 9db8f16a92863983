//! One server, with at most one session: a login costs immudb about 100 ms of CPU, so the agent
//! keeps its sessions across polls and reopens one only after it failed (`session not found`
//! after an immudb restart, or a primary pod that moved).

use std::net::{IpAddr, SocketAddr};

use crate::client::{Client, RpcError, Target};
use crate::config::Topology;
use crate::types::Credentials;
use crate::wait::SystemResolver;

/// How a link finds its server's address.
pub enum Dial {
    /// The local immudb, in the same pod.
    Fixed(IpAddr),
    /// A DNS name, resolved again after each failure: a restarted pod has a new address.
    Resolve(SystemResolver),
}

pub struct Link {
    /// The server's name, which TLS verifies and logs show.
    pub host: String,
    dial: Dial,
    port: u16,
    topology: Topology,
    session: Option<Client>,
}

impl Link {
    pub fn new(host: &str, dial: Dial, topology: &Topology) -> Link {
        Link {
            host: host.to_string(),
            dial,
            port: topology.grpc_port,
            topology: topology.clone(),
            session: None,
        }
    }

    async fn connect(&self) -> Result<Client, RpcError> {
        let ip = match &self.dial {
            Dial::Fixed(ip) => *ip,
            Dial::Resolve(resolver) => {
                resolver.resolve(&self.host).await.map_err(|e| RpcError {
                    call: "resolve",
                    code: tonic::Code::Unavailable,
                    message: e.to_string(),
                })?
            }
        };
        Client::new(&Target {
            host: self.host.clone(),
            address: SocketAddr::new(ip, self.port),
            tls: self.topology.tls.clone(),
        })
    }

    /// The open session, or a new one on the first database of `databases` that lets `who`
    /// in. `opened` counts logins.
    pub async fn session(
        &mut self,
        who: &Credentials,
        databases: &[String],
        opened: &mut u64,
    ) -> Result<&Client, RpcError> {
        if self.session.is_none() {
            let connection = self.connect().await?;
            let mut last = None;
            for database in databases {
                *opened += 1;
                match connection.open_session(who, database).await {
                    Ok(session) => {
                        tracing::info!(host = %self.host, %database, user = %who.user, "opened a session");
                        self.session = Some(session);
                        break;
                    }
                    Err(error) => last = Some(error),
                }
            }
            if self.session.is_none() {
                return Err(last.unwrap_or_else(|| RpcError {
                    call: "OpenSession",
                    code: tonic::Code::InvalidArgument,
                    message: "no database to open a session on".into(),
                }));
            }
        }
        Ok(self.session.as_ref().expect("set above"))
    }

    /// Forgets the session after a failure; the next poll reconnects (and resolves again).
    pub fn reset(&mut self) {
        self.session = None;
    }
}

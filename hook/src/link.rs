//! One server the agent talks to across polls: how to dial it and its one `Session`, opened at
//! the first call and kept (a login costs immudb about 100 ms of CPU). When the server does not
//! answer, the session is dropped, which closes it in the background, and the next call dials
//! again: a restarted pod may have a new address. A refused call keeps the session. A link may
//! bound each call as a whole (`within`): a server that stopped (SIGSTOP, a frozen VM, a node
//! whose packets are dropped) neither fails nor answers, and every RPC would wait its own timeout.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::client::{Client, RpcError, Target};
use crate::config::Topology;
use crate::retry::Retried;
use crate::session::{Bound, Logins, Session};
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
    logins: Logins,
    session: Option<Session>,
    /// Each call, all its RPCs together, ends after this long at most.
    limit: Option<Duration>,
}

impl Link {
    /// A link whose sessions count their logins into `logins`.
    pub fn new(host: &str, dial: Dial, topology: &Topology, logins: &Logins) -> Link {
        Link {
            host: host.to_string(),
            dial,
            port: topology.grpc_port,
            topology: topology.clone(),
            logins: logins.clone(),
            session: None,
            limit: None,
        }
    }

    /// A link to another pod by its DNS name, resolved again after each failure.
    pub fn resolving(host: &str, topology: &Topology, logins: &Logins) -> Link {
        Link::new(
            host,
            Dial::Resolve(SystemResolver::new(topology)),
            topology,
            logins,
        )
    }

    /// Every call ends after `limit` at most: a DeadlineExceeded, which drops the session.
    pub fn within(mut self, limit: Duration) -> Link {
        self.limit = Some(limit);
        self
    }

    /// A connection to the server, dialled now: for sessions of their own (a copy's, bounded
    /// per call, closed when it ends).
    pub async fn connect(&self) -> Result<Client, RpcError> {
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

    /// The session of `who` on the first of `databases` that lets it in; it logs in at its
    /// first call and is kept until the server stops answering.
    pub async fn session(
        &mut self,
        who: &Credentials,
        databases: &[String],
    ) -> Result<&Session, RpcError> {
        if self.session.is_none() {
            let server = self.connect().await?;
            let session = Session::new(&server, who, databases, Bound::Once).counting(&self.logins);
            self.session = Some(session);
        }
        Ok(self.session.as_ref().expect("set above"))
    }

    /// `attempt` once on the session (see [`Link::session`]); a session the server lost is
    /// reopened for it. When the server does not answer, the session is dropped.
    pub async fn call<T, F, Fut>(
        &mut self,
        who: &Credentials,
        databases: &[String],
        attempt: F,
    ) -> Result<T, RpcError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        let result = match self.limit {
            Some(limit) => tokio::time::timeout(limit, self.attempt(who, databases, attempt))
                .await
                .unwrap_or_else(|_| {
                    Err(RpcError {
                        call: "session",
                        code: tonic::Code::DeadlineExceeded,
                        message: format!("no answer within {} ms", limit.as_millis()),
                    })
                }),
            None => self.attempt(who, databases, attempt).await,
        };
        if result.as_ref().is_err_and(RpcError::unanswered) {
            self.reset();
        }
        result
    }

    async fn attempt<T, F, Fut>(
        &mut self,
        who: &Credentials,
        databases: &[String],
        attempt: F,
    ) -> Result<T, RpcError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        let session = self.session(who, databases).await?;
        session.retry(attempt).await.map_err(|error| match error {
            Retried::Failed(error) => error,
            // A session bound to one attempt has no deadline; kept total for the types.
            Retried::Deadline { last } => RpcError {
                call: "session",
                code: tonic::Code::DeadlineExceeded,
                message: last.unwrap_or_default(),
            },
        })
    }

    /// Drops the session (closing it in the background); the next call dials again.
    pub fn reset(&mut self) {
        self.session = None;
    }

    /// Closes the session and waits for the server's answer (at most `session::CLOSE_DEADLINE`).
    pub async fn close(&mut self) {
        if let Some(session) = self.session.take() {
            session.close().await;
        }
    }
}

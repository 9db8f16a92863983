//! A session kept for a whole transfer, however long it runs: opened once (a login costs immudb
//! about 100 ms of CPU), shared by every call in flight, and reopened when the server no longer
//! knows it (reaped, expired, or lost in a restart: 7 `session not found`). `--timeout-seconds`
//! bounds each call and its retries, never the transfer.

use std::future::Future;
use std::time::Duration;

use tokio::sync::RwLock;
use tokio::time::Instant;

use crate::client::{Client, RpcError};
use crate::report::StepResult;
use crate::retry::{self, Retried};
use crate::session::step_failed;
use crate::types::Credentials;

pub struct KeptSession {
    /// The connection sessions are opened over.
    connection: Client,
    who: Credentials,
    database: String,
    timeout: Duration,
    /// (how many times it was opened, the session).
    current: RwLock<(u64, Client)>,
}

fn lost(error: &RpcError) -> bool {
    error.code == tonic::Code::PermissionDenied && error.message.contains("session not found")
}

impl KeptSession {
    pub async fn open(
        connection: &Client,
        who: &Credentials,
        database: &str,
        timeout: Duration,
    ) -> StepResult<KeptSession> {
        let session = retry::until(Instant::now() + timeout, || {
            connection.open_session(who, database)
        })
        .await
        .map_err(|e| step_failed("open session", e))?;
        Ok(KeptSession {
            connection: connection.clone(),
            who: who.clone(),
            database: database.to_string(),
            timeout,
            current: RwLock::new((1, session)),
        })
    }

    /// One call on the session, its transient failures retried for up to `--timeout-seconds`
    /// from now; a session the server lost is reopened (once per loss, however many calls saw
    /// it) and the call made again.
    pub async fn call<T, F, Fut>(&self, step: &str, attempt: F) -> StepResult<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        self.retry(attempt).await.map_err(|e| step_failed(step, e))
    }

    /// Like [`KeptSession::call`], keeping the server's error for callers that inspect it.
    pub async fn retry<T, F, Fut>(&self, attempt: F) -> Result<T, Retried<RpcError>>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let (generation, client) = self.current.read().await.clone();
            match retry::until(deadline, || attempt(client.clone())).await {
                Err(Retried::Failed(error)) if lost(&error) => {
                    self.reopen(generation, deadline).await?;
                }
                result => return result,
            }
        }
    }

    async fn reopen(
        &self,
        lost_generation: u64,
        deadline: Instant,
    ) -> Result<(), Retried<RpcError>> {
        let mut current = self.current.write().await;
        if current.0 != lost_generation {
            return Ok(()); // another call reopened it already
        }
        let session = retry::until(deadline, || {
            self.connection.open_session(&self.who, &self.database)
        })
        .await?;
        tracing::warn!(database = %self.database, "the server lost the session; reopened it");
        *current = (lost_generation + 1, session);
        Ok(())
    }

    pub async fn close(&self) {
        let client = self.current.read().await.1.clone();
        if let Err(error) = client.close_session().await {
            tracing::warn!(%error, "could not close the session; immudb reaps it after a few minutes");
        }
    }
}

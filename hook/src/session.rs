//! One authenticated session on one node, opened once and reused for every call of a run: each
//! login costs immudb about 100 ms of CPU (bcrypt).

use tokio::time::Instant;

use crate::client::{Client, RpcError};
use crate::report::{Failed, Failure, StepResult};
use crate::retry::{self, Retried};
use crate::types::Credentials;

/// A failed step: a permanent refusal fails fast, a transient error that outlasted the deadline
/// counts as "not ready".
pub fn step_failed(step: &str, error: Retried<RpcError>) -> Failed {
    let failure = match &error {
        Retried::Failed(_) => Failure::Rejected,
        Retried::Deadline { .. } => Failure::NotReady,
    };
    (failure, format!("{step}: {error}"))
}

pub struct Session {
    pub client: Client,
    deadline: Instant,
}

impl Session {
    /// Opens a session on `database` over `connection` (the connection that answered the
    /// readiness checks), retrying transient failures until `deadline`.
    pub async fn open(
        connection: &Client,
        who: &Credentials,
        database: &str,
        deadline: Instant,
    ) -> StepResult<Session> {
        let client = retry::until(deadline, || connection.open_session(who, database))
            .await
            .map_err(|e| step_failed("open session", e))?;
        Ok(Session { client, deadline })
    }

    /// One call, retried while its failure is transient.
    pub async fn call<T, F, Fut>(&self, step: &str, call: F) -> StepResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RpcError>>,
    {
        self.retry(call).await.map_err(|e| step_failed(step, e))
    }

    /// Like [`Session::call`], keeping the server's error for callers that inspect it.
    pub async fn retry<T, F, Fut>(&self, call: F) -> Result<T, Retried<RpcError>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RpcError>>,
    {
        retry::until(self.deadline, call).await
    }

    pub async fn close(self) {
        if let Err(error) = self.client.close_session().await {
            tracing::warn!(%error, "could not close the session; immudb reaps it after a few minutes");
        }
    }
}

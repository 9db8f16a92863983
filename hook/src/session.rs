//! The one kind of immudb session in the binary. A login costs immudb about 100 ms of CPU
//! (bcrypt), and a server holds at most 100 sessions, keeping an idle one for 3 minutes: a client
//! that drops sessions unclosed and logs in again fills the table within seconds, for every client
//! of that server. So a session is opened once and shared by every call, concurrent ones
//! included; reopened only after the server lost it (once per loss, however many calls saw it);
//! and always closed: `close().await` on orderly paths, and a CloseSession sent in the background
//! when it is dropped open (a failure, a reconnect, a cancelled task, shutdown). Only this module
//! calls the client's OpenSession and CloseSession.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::RwLock;
use tokio::time::Instant;

use crate::client::{Client, RpcError};
use crate::report::{Failed, Failure, StepResult};
use crate::retry::{self, Retried, Transient};
use crate::types::Credentials;

/// How long a CloseSession may take: it is best effort, and a server that does not answer within
/// a second reaps the session itself after 3 minutes.
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(1);

/// A failed step: a permanent refusal fails fast, a transient error that outlasted the deadline
/// counts as "not ready".
pub fn step_failed(step: &str, error: Retried<RpcError>) -> Failed {
    let failure = match &error {
        Retried::Failed(_) => Failure::Rejected,
        Retried::Deadline { .. } => Failure::NotReady,
    };
    (failure, format!("{step}: {error}"))
}

/// What bounds the login and each call with its retries. Never a transfer: a backup keeps one
/// session for hours, each call bounded on its own.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    /// Everything ends at this instant: the Job's and `verify`'s `--timeout-seconds`.
    Until(Instant),
    /// Each call (and the login) gets this long from when it starts, retries included: backup,
    /// restore and rebuild-primary.
    EachCall(Duration),
    /// One attempt, no retry: the agent, whose next poll is the retry.
    Once,
}

impl Bound {
    fn deadline(self) -> Option<Instant> {
        match self {
            Bound::Until(at) => Some(at),
            Bound::EachCall(each) => Some(Instant::now() + each),
            Bound::Once => None,
        }
    }
}

/// `attempt` retried while transient until `deadline`, or tried once without one.
async fn attempts<T, F, Fut>(
    deadline: Option<Instant>,
    mut attempt: F,
) -> Result<T, Retried<RpcError>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RpcError>>,
{
    match deadline {
        Some(deadline) => retry::until(deadline, attempt).await,
        None => attempt().await.map_err(Retried::Failed),
    }
}

/// Logins made, shared by every session that counts into it (the agent exports the total as
/// `immudb_agent_logins_total`).
#[derive(Clone, Debug, Default)]
pub struct Logins(Arc<AtomicU64>);

impl Logins {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// immudb no longer knows the session: reaped, expired, or lost in a restart.
fn lost(error: &RpcError) -> bool {
    error.code == tonic::Code::PermissionDenied && error.message.contains("session not found")
}

/// The open session, if any, and how many sessions were opened so far (which one it is).
struct Current {
    opened: u64,
    client: Option<Client>,
}

pub struct Session {
    /// The connection sessions are opened over.
    server: Client,
    who: Credentials,
    /// Opened on the first of these that lets `who` in.
    databases: Vec<String>,
    bound: Bound,
    logins: Logins,
    current: RwLock<Current>,
}

impl Session {
    /// A session of `who` on the first of `databases` that lets it in, over `server` (the
    /// connection that answered the readiness checks); it logs in at its first call.
    pub fn new(server: &Client, who: &Credentials, databases: &[String], bound: Bound) -> Session {
        Session {
            server: server.clone(),
            who: who.clone(),
            databases: databases.to_vec(),
            bound,
            logins: Logins::default(),
            current: RwLock::new(Current {
                opened: 0,
                client: None,
            }),
        }
    }

    /// Counts its logins into `logins`.
    pub fn counting(mut self, logins: &Logins) -> Session {
        self.logins = logins.clone();
        self
    }

    /// A session on `database`, logged in now (transient failures retried within `bound`).
    pub async fn open(
        server: &Client,
        who: &Credentials,
        database: &str,
        bound: Bound,
    ) -> StepResult<Session> {
        let session = Session::new(server, who, &[database.to_string()], bound);
        session
            .client(bound.deadline())
            .await
            .map_err(|e| step_failed("open session", e))?;
        Ok(session)
    }

    /// The open session (which one, and its client), logging in first when there is none.
    async fn client(&self, deadline: Option<Instant>) -> Result<(u64, Client), Retried<RpcError>> {
        {
            let current = self.current.read().await;
            if let Some(client) = &current.client {
                return Ok((current.opened, client.clone()));
            }
        }
        let mut current = self.current.write().await;
        if let Some(client) = &current.client {
            return Ok((current.opened, client.clone()));
        }
        let client = attempts(deadline, || self.login()).await?;
        current.opened += 1;
        current.client = Some(client.clone());
        Ok((current.opened, client))
    }

    /// One login on the first database of `databases` that lets `who` in.
    async fn login(&self) -> Result<Client, RpcError> {
        let mut refused = None;
        for database in &self.databases {
            self.logins.add();
            match self.server.open_session(&self.who, database).await {
                Ok(client) => {
                    tracing::info!(host = %self.server.host(), %database, user = %self.who.user, "opened a session");
                    return Ok(client);
                }
                // The server did not answer or is full: another database would fare no better.
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => refused = Some(error),
            }
        }
        Err(refused.unwrap_or_else(|| RpcError {
            call: "OpenSession",
            code: tonic::Code::InvalidArgument,
            message: "no database to open a session on".into(),
        }))
    }

    /// Forgets session number `opened`, which the server lost; the next call logs in again. The
    /// calls that saw the same loss find the new one: one login per loss.
    async fn forget(&self, opened: u64) {
        let mut current = self.current.write().await;
        if current.opened == opened && current.client.take().is_some() {
            tracing::warn!(host = %self.server.host(), user = %self.who.user, "the server lost the session; opening another");
        }
    }

    /// One call on the session, within the bound: transient failures retried, a session the
    /// server lost reopened and the call made again (once, without a deadline).
    pub async fn retry<T, F, Fut>(&self, attempt: F) -> Result<T, Retried<RpcError>>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        let deadline = self.bound.deadline();
        let mut reopened = false;
        loop {
            let (opened, client) = self.client(deadline).await?;
            match attempts(deadline, || attempt(client.clone())).await {
                Err(Retried::Failed(error))
                    if lost(&error) && (deadline.is_some() || !reopened) =>
                {
                    self.forget(opened).await;
                    reopened = true;
                }
                result => return result,
            }
        }
    }

    /// Like [`Session::retry`], naming the step in a failure.
    pub async fn call<T, F, Fut>(&self, step: &str, attempt: F) -> StepResult<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        self.retry(attempt).await.map_err(|e| step_failed(step, e))
    }

    /// Closes the session on the server (best effort, within [`CLOSE_DEADLINE`]). A later call
    /// would log in again.
    pub async fn close(&self) {
        let open = self.current.write().await.client.take();
        if let Some(client) = open {
            close_on_server(client).await;
        }
    }
}

impl Drop for Session {
    /// Dropped open: the CloseSession is sent in the background.
    fn drop(&mut self) {
        let Some(client) = self.current.get_mut().client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let closing = Closing::start();
                runtime.spawn(async move {
                    close_on_server(client).await;
                    drop(closing);
                });
            }
            Err(_) => tracing::warn!(
                host = %client.host(),
                "a session was dropped outside the runtime; immudb reaps it after 3 minutes"
            ),
        }
    }
}

async fn close_on_server(client: Client) {
    match tokio::time::timeout(CLOSE_DEADLINE, client.close_session()).await {
        Ok(Ok(())) => tracing::debug!(host = %client.host(), "closed the session"),
        Ok(Err(error)) if lost(&error) => {
            tracing::debug!(host = %client.host(), "the server had already lost the session")
        }
        // Down or restarting: a restarted immudb has forgotten its sessions anyway.
        Ok(Err(error)) if error.unanswered() => tracing::info!(
            host = %client.host(), %error,
            "could not close the session: the server does not answer"
        ),
        Ok(Err(error)) => tracing::warn!(
            host = %client.host(), %error,
            "could not close the session; immudb reaps it after 3 minutes"
        ),
        Err(_) => tracing::warn!(
            host = %client.host(),
            "CloseSession got no answer within {} s; immudb reaps the session after 3 minutes",
            CLOSE_DEADLINE.as_secs()
        ),
    }
}

/// CloseSessions sent in the background and not finished yet.
static CLOSING: AtomicUsize = AtomicUsize::new(0);

/// One background CloseSession, counted while it runs (also when its task is cancelled).
struct Closing;

impl Closing {
    fn start() -> Closing {
        CLOSING.fetch_add(1, Ordering::SeqCst);
        Closing
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        CLOSING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until the background CloseSessions of dropped sessions have finished, at most
/// [`CLOSE_DEADLINE`] and a little: before the process exits, which would cancel them.
pub async fn closes_finished() {
    let deadline = Instant::now() + CLOSE_DEADLINE + Duration::from_millis(100);
    while CLOSING.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

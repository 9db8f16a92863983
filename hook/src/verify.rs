//! `verify`, the chart's `helm test`. It writes a probe key into a dedicated canary database on
//! the primary and reads it back from every replica; with `--read-only` it writes nothing and
//! waits until every replica holds the transactions the primary had at the start. The chart
//! never writes into a user's database: an immutable database keeps every write forever.
//! Async replicas may pick up a write only after their idle backoff (up to about two minutes),
//! so the deadline should be minutes.
//!
//! A replica that is not running (its pod Pending, so its name does not resolve; its node lost,
//! so its port never answers; being replaced) is waited for at most `--skip-after-seconds`, then
//! skipped and named: an operator after a node loss tells "serving, one pod missing" from
//! "broken". A replica whose immudb answers is running and must show the probe.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use futures::future::join_all;
use tokio::time::Instant;
use tracing::Instrument;

use crate::client::{Client, RpcError};
use crate::config::{check_database_name, reject, ConfigError, Topology, TopologyArgs};
use crate::report::{Failure, Line, Outcome, Report, StepResult};
use crate::session::{Bound, Session};
use crate::types::{Credentials, Role};
use crate::wait::{joined, node_span, spawn_waits, WaitFailed};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The canary database the probe key is written to (never a user database).
    #[arg(long, env = "IMMUDB_HOOK_VERIFY_DATABASE")]
    pub database: String,
    /// Write nothing: check that every replica holds the transactions the primary had at start.
    #[arg(long, env = "IMMUDB_HOOK_VERIFY_READ_ONLY")]
    pub read_only: bool,
    /// A replica that has not answered this long after the start (its name does not resolve, its
    /// port refuses or never answers, immudb does not reply) is skipped as not running and named
    /// in the summary; one that answers must show the probe.
    #[arg(
        long,
        env = "IMMUDB_HOOK_VERIFY_SKIP_AFTER_SECONDS",
        default_value_t = 30
    )]
    pub skip_after_seconds: u64,
}

#[derive(Clone, Debug)]
pub struct VerifyConfig {
    pub topology: Topology,
    pub admin: Credentials,
    pub timeout: Duration,
    pub database: String,
    pub read_only: bool,
    /// How long a replica that does not answer is waited for before it is skipped.
    pub skip_after: Duration,
}

impl VerifyArgs {
    pub fn config(&self, topology_args: &TopologyArgs) -> Result<VerifyConfig, ConfigError> {
        if !(self.read_only && self.database == "defaultdb") {
            // defaultdb is where clients write: verify writes into it never, only reads.
            check_database_name("--database", &self.database)?;
        }
        if self.skip_after_seconds == 0 {
            return reject(
                "--skip-after-seconds",
                0,
                "must be at least 1: a replica gets a chance to answer",
            );
        }
        Ok(VerifyConfig {
            topology: topology_args.topology()?,
            admin: topology_args.admin()?,
            timeout: topology_args.timeout()?,
            database: self.database.clone(),
            read_only: self.read_only,
            skip_after: Duration::from_secs(self.skip_after_seconds),
        })
    }
}

/// What every replica must show.
enum Expectation {
    /// The probe key with this value.
    Probe { key: Vec<u8>, value: Vec<u8> },
    /// At least this many transactions in the database.
    Transactions(u64),
}

async fn transactions(session: &Client, database: &str) -> Result<u64, RpcError> {
    let databases = session.list_databases().await?;
    databases
        .iter()
        .find(|d| d.name == database)
        .map(|d| d.tx_count)
        .ok_or_else(|| RpcError::pending("read", format!("database '{database}' is not there yet")))
}

/// One check of a replica: Ok when it shows what is expected, a pending error while it does not.
async fn shows(session: &Client, database: &str, expected: &Expectation) -> Result<(), RpcError> {
    match expected {
        Expectation::Probe { key, value } => match session.get(key).await {
            Ok(found) if &found == value => Ok(()),
            Ok(_) => Err(RpcError::pending(
                "read",
                "the key holds another value".into(),
            )),
            Err(e) if e.message.contains("key not found") || e.code == tonic::Code::NotFound => {
                Err(RpcError::pending(
                    "read",
                    "the probe key has not arrived yet".into(),
                ))
            }
            Err(e) => Err(e),
        },
        Expectation::Transactions(target) => {
            let have = transactions(session, database).await?;
            if have >= *target {
                Ok(())
            } else {
                Err(RpcError::pending(
                    "read",
                    format!("database '{database}' has {have} of {target} transactions"),
                ))
            }
        }
    }
}

pub async fn verify(config: &VerifyConfig) -> Report {
    let started = Instant::now();
    let deadline = started + config.timeout;
    let skip_at = (started + config.skip_after).min(deadline);
    let (primary_wait, replica_waits) = spawn_waits(&config.topology, deadline, skip_at);
    let database = config.database.as_str();
    let mut report = Report::default();

    let on_primary = async {
        let ready = joined(primary_wait)
            .await
            .map_err(|e| (Failure::NotReady, e.to_string()))?;
        let session = Session::open(
            &ready.client,
            &config.admin,
            database,
            Bound::Until(deadline),
        )
        .await?;
        let result = if config.read_only {
            session
                .call("read", |c| async move { transactions(&c, database).await })
                .await
                .map(|count| (Outcome::Unchanged, Expectation::Transactions(count)))
        } else {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let key = format!("immudb-hook/verify/{nanos}").into_bytes();
            let value = format!("probe-{nanos}").into_bytes();
            let (k, v) = (&key, &value);
            let written = session
                .call("write", |c| async move { c.set(k, v).await })
                .await;
            written.map(|tx| {
                tracing::info!(tx, "wrote the probe key");
                (Outcome::Written { tx }, Expectation::Probe { key, value })
            })
        };
        session.close().await;
        result
    }
    .instrument(node_span(Role::Primary, &config.topology.primary))
    .await;
    let (primary_outcome, expected) = match on_primary {
        Ok((outcome, expected)) => (Ok(outcome), Some(expected)),
        Err(failed) => (Err(failed), None),
    };
    report.lines.push(Line::for_database(
        Role::Primary,
        &config.topology.primary,
        database,
        primary_outcome,
    ));
    let written = Instant::now();

    let replicas = replica_waits.into_iter().map(|(host, waiting)| {
        let span = node_span(Role::Replica, &host);
        let expected = expected.as_ref();
        async move {
            let Some(expected) = expected else {
                waiting.abort();
                let skipped = Err((Failure::Skipped, "skipped: the primary failed".to_string()));
                return (host, skipped);
            };
            let checked = async {
                let ready = match joined(waiting).await {
                    Ok(ready) => ready,
                    Err(WaitFailed::NotRunning { last }) => {
                        let waited = skip_at.duration_since(started).as_secs();
                        let last = last.unwrap_or_else(|| "no attempt finished".into());
                        let reason = format!("no answer in {waited} s: {last}");
                        tracing::warn!(%reason, "the replica is not running; skipped");
                        return Ok(Outcome::NotRunning { reason });
                    }
                    Err(broken) => return Err((Failure::NotReady, broken.to_string())),
                };
                let bound = Bound::Until(deadline);
                let session = Session::open(&ready.client, &config.admin, database, bound).await?;
                let result = session
                    .call(
                        "read",
                        |c| async move { shows(&c, database, expected).await },
                    )
                    .await;
                session.close().await;
                result.map_err(|(failure, reason)| match failure {
                    Failure::NotReady => (Failure::NotReplicated, reason),
                    other => (other, reason),
                })?;
                let after_ms = written.elapsed().as_millis() as u64;
                tracing::info!(after_ms, "the replica shows the primary's data");
                Ok(match expected {
                    Expectation::Probe { .. } => Outcome::Replicated { after_ms },
                    Expectation::Transactions(_) => Outcome::CaughtUp { after_ms },
                })
            };
            (host, checked.await)
        }
        .instrument(span)
    });
    let mut checked = join_all(replicas).await;
    let not_running =
        |result: &StepResult<Outcome>| matches!(result, Ok(Outcome::NotRunning { .. }));
    if !checked.is_empty() && checked.iter().all(|(_, result)| not_running(result)) {
        // Reads have no replica to go to: that is broken, not "one pod missing".
        for (_, result) in &mut checked {
            if let Ok(Outcome::NotRunning { reason }) = result {
                let why = format!("not running, and no other replica is: {reason}");
                *result = Err((Failure::NotReady, why));
            }
        }
    }
    for (host, result) in checked {
        report
            .lines
            .push(Line::for_database(Role::Replica, &host, database, result));
    }
    report
}

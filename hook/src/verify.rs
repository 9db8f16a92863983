//! `verify`, the chart's `helm test`: write a probe key on the primary and read it back from every
//! replica before the deadline. Async replicas may pick up a write only after their idle backoff
//! (up to about two minutes), so the deadline should be minutes.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use tokio::time::Instant;
use tracing::Instrument;

use crate::client::RpcError;
use crate::config::{Role, VerifyConfig};
use crate::reconcile::{joined, node_span, spawn_waits, Session};
use crate::report::{Failure, Line, Outcome, Report};

fn outcome_line(
    role: Role,
    host: &str,
    database: &str,
    result: Result<Outcome, (Failure, String)>,
) -> Line {
    let outcome = result.unwrap_or_else(|(failure, reason)| Outcome::Failed { failure, reason });
    Line {
        role,
        host: host.to_string(),
        database: Some(database.to_string()),
        outcome,
    }
}

pub async fn verify(config: &VerifyConfig) -> Report {
    let deadline = Instant::now() + config.timeout;
    let (primary_wait, replica_waits) = spawn_waits(&config.topology, deadline);
    let database = config.database.as_str();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = format!("immudb-hook/verify/{nanos}").into_bytes();
    let value = format!("probe-{nanos}").into_bytes();
    let mut report = Report::default();

    let written = async {
        let ready = joined(primary_wait)
            .await
            .map_err(|e| (Failure::NotReady, e))?;
        let session = Session::open(&ready, &config.admin, database, deadline).await?;
        let tx = session
            .call("write", || session.client.set(&key, &value))
            .await;
        session.close().await;
        tracing::info!("wrote the probe key");
        Ok(Outcome::Written { tx: tx? })
    }
    .instrument(node_span(Role::Primary, &config.topology.primary))
    .await;
    let primary_failed = written.is_err();
    report.lines.push(outcome_line(
        Role::Primary,
        &config.topology.primary,
        database,
        written,
    ));
    let written_at = Instant::now();

    let replicas = replica_waits.into_iter().map(|(host, waiting)| {
        let span = node_span(Role::Replica, &host);
        let (key, value) = (&key, &value);
        async move {
            if primary_failed {
                waiting.abort();
                return (
                    host,
                    Err((Failure::Skipped, "skipped: the primary failed".to_string())),
                );
            }
            let read_back = async {
                let ready = joined(waiting).await.map_err(|e| (Failure::NotReady, e))?;
                let session = Session::open(&ready, &config.admin, database, deadline).await?;
                let read = || async {
                    match session.client.get(key).await {
                        Ok(found) if &found == value => Ok(()),
                        Ok(_) => Err(RpcError::pending(
                            "read",
                            "the key holds another value".into(),
                        )),
                        Err(e)
                            if e.message.contains("key not found")
                                || e.code == tonic::Code::NotFound =>
                        {
                            Err(RpcError::pending(
                                "read",
                                "the probe key has not arrived yet".into(),
                            ))
                        }
                        Err(e) => Err(e),
                    }
                };
                let result = session.call("read", read).await;
                session.close().await;
                result.map_err(|(failure, reason)| match failure {
                    Failure::NotReady => (Failure::NotReplicated, reason),
                    other => (other, reason),
                })?;
                let after_ms = written_at.elapsed().as_millis() as u64;
                tracing::info!(after_ms, "the probe key arrived");
                Ok(Outcome::Replicated { after_ms })
            };
            (host, read_back.await)
        }
        .instrument(span)
    });
    for (host, result) in join_all(replicas).await {
        report
            .lines
            .push(outcome_line(Role::Replica, &host, database, result));
    }
    report
}

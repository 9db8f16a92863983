//! One retry policy for every transient failure: exponential backoff from 50 ms, doubling, capped
//! at 800 ms (plus up to 50 ms of jitter) so the hook notices a pod within about a second of it
//! coming up, and retried until the hook's overall deadline.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

pub trait Transient: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

#[derive(Debug, thiserror::Error)]
pub enum Retried<E: std::fmt::Display> {
    #[error("{0}")]
    Failed(E),
    #[error("deadline reached; last error: {}", last.as_deref().unwrap_or("none"))]
    Deadline { last: Option<String> },
}

pub fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(800))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// Runs `attempt` until it succeeds, fails permanently, or `deadline` passes.
pub async fn until<T, E, F, Fut>(deadline: Instant, attempt: F) -> Result<T, Retried<E>>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut last = None;
    let retrying = attempt
        .retry(backoff())
        .sleep(tokio::time::sleep)
        .when(|e: &E| e.is_transient())
        .notify(|e: &E, delay: Duration| {
            tracing::debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "transient failure");
            last = Some(e.to_string());
        });
    match tokio::time::timeout_at(deadline, retrying).await {
        Ok(result) => result.map_err(Retried::Failed),
        Err(_) => Err(Retried::Deadline { last }),
    }
}

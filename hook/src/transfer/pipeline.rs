//! Transactions moved with several calls in flight, in transaction order.
//!
//! - [`ReplicatePipeline`]: replicateTx into a database in replica mode. immudb orders concurrent
//!   calls itself (each waits until its predecessor is precommitted) and one sync makes every
//!   pending commit durable, so `depth` calls in flight cost about one sync where one call at a
//!   time costs one each (immudb 1.11: 131 tx/s one at a time, 2,219 tx/s with 30 in flight). The
//!   depth never exceeds the database's maxConcurrency: beyond it immudb refuses the call (`max
//!   concurrency limit exceeded`), and waiting calls holding every slot would starve the one they
//!   wait for.
//! - [`ReadAhead`]: up to `depth` reads (TxById, exportTx) in flight, handed over in order.
//!
//! Each call runs as its own task, so calls progress while the caller reads or writes. The first
//! failure in transaction order stops the pipeline, names its transaction, and cancels the calls
//! behind it (dropping a pipeline cancels whatever is in flight).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use immudb_txlog::{hex, Hash, TxHeader};
use tokio::task::JoinHandle;

use crate::report::{integrity, Failure, StepResult};
use crate::retry::Retried;
use crate::session::{step_failed, Session};

/// immudb's answer to a transaction it already holds.
const ALREADY_COMMITTED: &str = "tx already committed";

/// Tasks in flight, oldest first; dropped, they are cancelled.
struct InFlight<T> {
    tasks: VecDeque<(u64, JoinHandle<StepResult<T>>)>,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight {
            tasks: VecDeque::new(),
        }
    }
}

impl<T> InFlight<T> {
    /// The oldest task's result, `None` when nothing is in flight.
    async fn oldest(&mut self) -> Option<(u64, StepResult<T>)> {
        let (tx, task) = self.tasks.pop_front()?;
        let result = task.await.unwrap_or_else(|e| {
            Err((
                Failure::Rejected,
                format!("tx {tx}: the call's task ended: {e}"),
            ))
        });
        Some((tx, result))
    }
}

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}

pub struct ReplicatePipeline {
    session: Arc<Session>,
    depth: usize,
    in_flight: InFlight<(Hash, TxHeader)>,
}

impl ReplicatePipeline {
    pub fn new(session: Arc<Session>, depth: usize) -> ReplicatePipeline {
        ReplicatePipeline {
            session,
            depth: depth.max(1),
            in_flight: InFlight::default(),
        }
    }

    /// Sends transaction `tx` (its stream message, whose Alh is `alh`) once fewer than `depth`
    /// calls are in flight; fails with the first failure of an earlier transaction.
    pub async fn send(&mut self, tx: u64, alh: Hash, message: Vec<u8>) -> StepResult<()> {
        while self.in_flight.tasks.len() >= self.depth {
            self.complete_oldest().await?;
        }
        let session = self.session.clone();
        let task = tokio::spawn(async move {
            let header = replicate(&session, tx, alh, &message).await?;
            Ok((alh, header))
        });
        self.in_flight.tasks.push_back((tx, task));
        Ok(())
    }

    /// Waits for every call in flight.
    pub async fn finish(mut self) -> StepResult<()> {
        while !self.in_flight.tasks.is_empty() {
            self.complete_oldest().await?;
        }
        Ok(())
    }

    async fn complete_oldest(&mut self) -> StepResult<()> {
        let Some((tx, result)) = self.in_flight.oldest().await else {
            return Ok(());
        };
        let (alh, header) = result?;
        if header.id != tx || header.alh() != alh {
            return Err(integrity(format!(
                "tx {tx}: the server committed tx {} with Alh {}, the record's is {}",
                header.id,
                hex(&header.alh()),
                hex(&alh)
            )));
        }
        Ok(())
    }
}

/// One replicateTx, retried while transient. A retry whose first attempt did reach the server
/// hears "tx already committed": the transaction is then accepted if the server holds it with
/// the expected Alh.
async fn replicate(session: &Session, tx: u64, alh: Hash, message: &[u8]) -> StepResult<TxHeader> {
    let named = |(failure, reason): (Failure, String)| (failure, format!("tx {tx}: {reason}"));
    match session
        .retry(|c| async move { c.replicate_tx(message).await })
        .await
    {
        Ok(header) => Ok(header),
        Err(Retried::Failed(e)) if e.message == ALREADY_COMMITTED => {
            let held = session
                .call("TxById", |c| async move { c.tx_header(tx).await })
                .await
                .map_err(named)?;
            if held.alh() == alh {
                Ok(held)
            } else {
                Err(named(step_failed("replicateTx", Retried::Failed(e))))
            }
        }
        Err(e) => Err(named(step_failed("replicateTx", e))),
    }
}

/// Reads transactions `first..=last` with up to `depth` reads in flight, in order.
pub struct ReadAhead<T, F> {
    next: u64,
    last: u64,
    depth: usize,
    read: F,
    in_flight: InFlight<T>,
}

impl<T, F, Fut> ReadAhead<T, F>
where
    T: Send + 'static,
    F: Fn(u64) -> Fut,
    Fut: Future<Output = StepResult<T>> + Send + 'static,
{
    pub fn new(first: u64, last: u64, depth: usize, read: F) -> ReadAhead<T, F> {
        ReadAhead {
            next: first,
            last,
            depth: depth.max(1),
            read,
            in_flight: InFlight::default(),
        }
    }

    /// The next transaction in order, `None` after `last`.
    pub async fn next(&mut self) -> Option<StepResult<(u64, T)>> {
        while self.in_flight.tasks.len() < self.depth && self.next <= self.last {
            let id = self.next;
            self.in_flight
                .tasks
                .push_back((id, tokio::spawn((self.read)(id))));
            self.next += 1;
        }
        let (tx, result) = self.in_flight.oldest().await?;
        Some(
            result
                .map(|value| (tx, value))
                .map_err(|(failure, reason)| (failure, format!("tx {tx}: {reason}"))),
        )
    }
}

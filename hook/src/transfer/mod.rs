//! Moving a history from one immudb to another, transaction by transaction: exportTx read ahead
//! from the source, every transaction chain-checked (its prevAlh, and its entries against its
//! eH) on the way, replicateTx pipelined into the target, a database in replica mode. No
//! intermediate storage. `rebuild-primary` copies a replica into a new primary with it; the
//! agent's hand-over copies what the chosen replica lacks from the fenced primary. Part of the
//! engine, so every subcommand may use it.

mod pipeline;

use std::sync::Arc;

use immudb_txlog::{Chain, ExportedTx};

use crate::report::{integrity, StepResult};
use crate::session::Session;
pub use pipeline::{ReadAhead, ReplicatePipeline};

/// How many calls a copy keeps in flight.
#[derive(Clone, Copy, Debug)]
pub struct Depth {
    /// exportTx calls read ahead.
    pub read_ahead: usize,
    /// replicateTx calls in flight; never above the target database's maxConcurrency.
    pub replicate: usize,
}

/// Copies transactions `from.last_id + 1 ..= last` of `reader`'s database into `writer`'s (in
/// replica mode): each one must chain to the one before, starting at `from` (the target's last
/// transaction). Returns the chain's end; `source` names the reader in errors.
pub async fn copy(
    reader: &Arc<Session>,
    writer: &Arc<Session>,
    from: Chain,
    last: u64,
    depth: Depth,
    source: &str,
) -> StepResult<Chain> {
    let mut reads = ReadAhead::new(from.last_id + 1, last, depth.read_ahead, |id| {
        let reader = reader.clone();
        async move {
            reader
                .call("exportTx", |c| async move { c.export_tx(id).await })
                .await
        }
    });
    let mut pipeline = ReplicatePipeline::new(writer.clone(), depth.replicate);
    let mut chain = from;
    while let Some(read) = reads.next().await {
        let (id, message) = read.map_err(|(f, reason)| (f, format!("{source}: {reason}")))?;
        let tx = ExportedTx::from_message(&message).map_err(|e| {
            integrity(format!(
                "tx {id} from {source}: a malformed transaction: {e}"
            ))
        })?;
        let alh = chain
            .append(&tx)
            .map_err(|e| integrity(format!("{source}: {e}")))?;
        pipeline.send(id, alh, message).await?;
    }
    pipeline.finish().await?;
    Ok(chain)
}

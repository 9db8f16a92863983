//! Reading a chain back: every object streamed (one record in memory at a time), its SHA-256
//! compared with the manifest, every record run through the chain check (values included: each
//! transaction's entries must hash to its eH), and each record up to the requested transaction
//! handed to a visitor. A corrupted, truncated or foreign record fails naming the object, the
//! record, its transaction and its byte offset, and a changed value also names its entry.

use std::pin::Pin;
use std::task::{Context, Poll};

use immudb_txlog::{hex, Chain, ChainError, Hash, Record, RecordReader};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use super::catalog;
use super::storage::Storage;
use super::{integrity, storage_failed, StepResult};

/// Hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    sha: Sha256,
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let fresh = buf.filled()[before..].to_vec();
            self.sha.update(&fresh);
        }
        polled
    }
}

/// What a walk proved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walked {
    /// The Alh of the last transaction walked.
    pub end_alh: Hash,
    pub objects: u64,
    pub records: u64,
    /// Entries hashed to their transaction's eH.
    pub entries: u64,
}

/// Walks `chain` up to transaction `end`, calling `visit` with each record of 1..=end in order.
/// Every object it opens is read whole and checked (records past `end` too), so a walk proves
/// each object it touched against its manifest.
pub async fn walk<F>(
    storage: &Storage,
    chain: &catalog::Chain,
    end: u64,
    visit: &mut F,
) -> StepResult<Walked>
where
    F: AsyncFnMut(Record) -> StepResult<()>,
{
    let mut history = Chain::genesis();
    let mut walked = Walked {
        end_alh: [0; 32],
        objects: 0,
        records: 0,
        entries: 0,
    };
    let mut reached = false;
    for manifest in chain.manifests.iter().take_while(|m| m.first_tx <= end) {
        let object = &manifest.object;
        let where_ = |what: String| integrity(format!("{} {object}: {what}", storage.name));
        let reader = storage.reader(object).await.map_err(storage_failed)?;
        let mut records = RecordReader::new(HashingReader {
            inner: reader,
            sha: Sha256::new(),
        });
        let mut count = 0u64;
        loop {
            let offset = records.offset();
            let record = match records.next().await {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(e) => return Err(where_(e.to_string())),
            };
            let tx = history.verify(&record).map_err(|e| {
                // Entry offsets count from the record; the operator needs them in the object.
                let e = match e {
                    ChainError::Entries(entries) => ChainError::Entries(entries.shifted(offset)),
                    other => other,
                };
                where_(format!(
                    "record {count} (tx {}) at byte {offset}: {e}",
                    record.tx_id
                ))
            })?;
            count += 1;
            walked.entries += tx.entries.len() as u64;
            if record.tx_id <= end {
                if record.tx_id == end {
                    walked.end_alh = record.checksum;
                    reached = true;
                }
                visit(record).await?;
            }
        }
        let reader = records.into_inner();
        let sha = hex(&reader.sha.finalize());
        if sha != manifest.sha256 {
            return Err(where_(format!(
                "SHA-256 {sha} is not the manifest's {}: the object changed after it was written",
                manifest.sha256
            )));
        }
        if count != manifest.records
            || history.last_id != manifest.last_tx
            || hex(&history.last_alh) != manifest.last_alh
        {
            return Err(where_(format!(
                "holds {count} records up to tx {} (Alh {}), the manifest says {} records up to tx {} (Alh {})",
                history.last_id,
                hex(&history.last_alh),
                manifest.records,
                manifest.last_tx,
                manifest.last_alh
            )));
        }
        walked.objects += 1;
        walked.records += count;
    }
    if !reached {
        return Err(integrity(format!(
            "{}: chain {} does not reach tx {end}",
            storage.name, chain.id
        )));
    }
    Ok(walked)
}

//! immudb's transaction formats, shared by the hook and the immudb test double so that both read
//! and write the same bytes:
//! - [`header`]: a transaction header as `TxById` returns it, its serialisation and its Alh (the
//!   accumulated hash that chains a transaction to every one before it);
//! - [`export`]: a transaction as `exportTx` streams it and `replicateTx` takes it;
//! - [`hotbackup`]: immuadmin's hot-backup file, one record per transaction, read as a stream;
//! - [`entries`]: the entries hash (eH) recomputed from a transaction's keys, values and metadata;
//! - [`chain`]: the check that a sequence of records is one unbroken history, values included.
//!
//! Every format is checked byte for byte against what a real immudb 1.10.0 wrote
//! (`tests/fixtures/immudb-1.10.0/`).

pub mod chain;
pub mod entries;
pub mod export;
pub mod header;
pub mod hotbackup;

pub use chain::{hex, Chain, ChainError};
pub use entries::EntriesError;
pub use export::{ExportedTx, TxEntry};
pub use header::{Hash, TxHeader, TxMetadata, EMPTY_ALH};
pub use hotbackup::{ReadError, Record, RecordReader};

/// A malformed transaction, header or record: what was being read and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{what} is truncated: needs {needed} bytes, {available} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("unsupported transaction header version {0} (immudb writes 0 and 1)")]
    HeaderVersion(u16),
    #[error("transaction metadata is malformed: {0}")]
    Metadata(&'static str),
    #[error("{0} trailing bytes after the last entry")]
    TrailingBytes(usize),
    #[error("the stream message announces {announced} bytes but carries {carried}")]
    MessageLength { announced: u64, carried: usize },
    #[error("the truncated-values flag is {0}, expected 0 or 1")]
    TruncationFlag(u8),
}

/// Reads big-endian integers and byte runs off a slice, naming what it reads when it runs out.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, position: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        if self.remaining() < n {
            return Err(FormatError::Truncated {
                what,
                needed: n,
                available: self.remaining(),
            });
        }
        let run = &self.bytes[self.position..self.position + n];
        self.position += n;
        Ok(run)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], FormatError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, FormatError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
}

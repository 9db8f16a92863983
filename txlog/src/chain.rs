//! One unbroken history: each record is the next transaction id, its content decodes, its
//! checksum is the Alh of the header it carries, that header's prevAlh is the previous record's
//! Alh, and its entries hash to the header's eH, so the chain proves every key and value, not only
//! the headers. A backup, a restore and a rebuild all run every transaction through this.

use crate::entries::EntriesError;
use crate::export::ExportedTx;
use crate::header::{Hash, EMPTY_ALH};
use crate::hotbackup::{Record, CONTENT_OFFSET};
use crate::FormatError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("tx {found} follows tx {last}: expected tx {} (a gap or a reordering)", last + 1)]
    Gap { last: u64, found: u64 },
    #[error("tx {tx}: the content is not an exported transaction: {error}")]
    Format { tx: u64, error: FormatError },
    #[error("tx {tx}: the content carries the header of tx {header_id}")]
    IdMismatch { tx: u64, header_id: u64 },
    #[error(
        "tx {tx}: checksum {found} is not the Alh {computed} of the header the record carries"
    )]
    Checksum {
        tx: u64,
        found: String,
        computed: String,
    },
    #[error("tx {tx} does not chain: its prevAlh is {found}, expected the Alh of tx {} ({expected})", tx - 1)]
    PrevAlh {
        tx: u64,
        found: String,
        expected: String,
    },
    /// The entries are not those the header commits to; offsets count from the start of the
    /// record ([`Chain::verify`]) or of the exported transaction ([`Chain::append`]).
    #[error("{0}")]
    Entries(EntriesError),
}

pub fn hex(hash: &[u8]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The verified end of a history so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub last_id: u64,
    pub last_alh: Hash,
}

impl Default for Chain {
    fn default() -> Self {
        Chain::genesis()
    }
}

impl Chain {
    /// Before transaction 1.
    pub fn genesis() -> Chain {
        Chain {
            last_id: 0,
            last_alh: EMPTY_ALH,
        }
    }

    /// After transaction `last_id`, whose Alh is `last_alh`.
    pub fn after(last_id: u64, last_alh: Hash) -> Chain {
        Chain { last_id, last_alh }
    }

    /// Accepts `tx` as the next transaction (checking id, prevAlh and that its entries hash to
    /// its eH) and returns its Alh.
    pub fn append(&mut self, tx: &ExportedTx) -> Result<Hash, ChainError> {
        let id = tx.header.id;
        if id != self.last_id + 1 {
            return Err(ChainError::Gap {
                last: self.last_id,
                found: id,
            });
        }
        if tx.header.prev_alh != self.last_alh {
            return Err(ChainError::PrevAlh {
                tx: id,
                found: hex(&tx.header.prev_alh),
                expected: hex(&self.last_alh),
            });
        }
        tx.verify_entries().map_err(ChainError::Entries)?;
        let alh = tx.header.alh();
        self.last_id = id;
        self.last_alh = alh;
        Ok(alh)
    }

    /// Accepts `record` as the next one: the checks of [`Chain::append`], plus that the record's
    /// id and checksum agree with the transaction it carries. Returns the decoded transaction.
    pub fn verify(&mut self, record: &Record) -> Result<ExportedTx, ChainError> {
        if record.tx_id != self.last_id + 1 {
            return Err(ChainError::Gap {
                last: self.last_id,
                found: record.tx_id,
            });
        }
        let tx = record.transaction().map_err(|error| ChainError::Format {
            tx: record.tx_id,
            error,
        })?;
        if tx.header.id != record.tx_id {
            return Err(ChainError::IdMismatch {
                tx: record.tx_id,
                header_id: tx.header.id,
            });
        }
        let computed = tx.header.alh();
        if computed != record.checksum {
            return Err(ChainError::Checksum {
                tx: record.tx_id,
                found: hex(&record.checksum),
                computed: hex(&computed),
            });
        }
        self.append(&tx).map_err(|e| match e {
            ChainError::Entries(e) => ChainError::Entries(e.shifted(CONTENT_OFFSET)),
            other => other,
        })?;
        Ok(tx)
    }
}

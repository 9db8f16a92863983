//! One database's transaction log, as immudb keeps it: headers chained by a real Alh (computed by
//! `immudb-txlog`, checked there against a real server), the entries of every transaction, and a
//! key index so that Get answers. Replicas grow their log only by applying exported transactions
//! one at a time, as immudb's replicator does.
//!
//! A transaction is first precommitted (stored), then committed. Without synchronous replication
//! both happen at once; with it, the primary commits once enough replicas acknowledged and a
//! replica once its primary allows (`Database::commit_allowance` decides). Reads, CurrentState's
//! txId and exports see committed transactions; precommitted ones beyond them can be discarded
//! (`allowTxDiscarding`), committed ones never.
//!
//! Two header fields are stand-ins: eH (immudb's hash tree over the entries) is a SHA-256 of the
//! encoded entries, and blRoot (the root of immudb's accumulated hash tree at blTxId) is a SHA-256
//! chain over the previous Alhs. Both are deterministic and feed the real Alh, so a changed entry
//! or a reordered history still changes every later Alh.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use immudb_txlog::{ExportedTx, Hash, TxEntry, TxHeader, TxMetadata, EMPTY_ALH};
use sha2::{Digest, Sha256};

/// The one-byte prefix immudb puts before plain key-value keys and values.
const PLAIN: u8 = 0;

/// Why a replicated transaction was refused, with immudb's texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicateError {
    AlreadyCommitted,
    WrongOrder,
    InvalidPrevAlh,
    EntryCount,
}

impl ReplicateError {
    pub fn message(&self) -> &'static str {
        match self {
            ReplicateError::AlreadyCommitted => "tx already committed",
            ReplicateError::WrongOrder => "unexpected error: attempt to commit a tx in wrong order",
            ReplicateError::InvalidPrevAlh => {
                "illegal arguments: attempt to commit a tx with invalid prevAlh"
            }
            ReplicateError::EntryCount => "illegal arguments",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// Every stored transaction, precommitted ones included.
    transactions: Vec<ExportedTx>,
    alhs: Vec<Hash>,
    /// How many of them are committed.
    committed: u64,
    /// Stored key (with its prefix) → every (transaction, stored value) that wrote it.
    index: BTreeMap<Vec<u8>, Vec<(u64, Vec<u8>)>>,
}

impl Ledger {
    /// Committed transactions: what DatabaseListV2 counts.
    pub fn tx_count(&self) -> u64 {
        self.committed
    }

    /// Stored transactions, committed or not.
    pub fn precommitted_count(&self) -> u64 {
        self.transactions.len() as u64
    }

    fn state_at(&self, id: u64) -> (u64, Hash) {
        let alh = match id {
            0 => EMPTY_ALH,
            id => self.alhs[id as usize - 1],
        };
        (id, alh)
    }

    /// (last committed transaction id, its Alh): what CurrentState reports; (0, SHA256("")) when empty.
    pub fn state(&self) -> (u64, Hash) {
        self.state_at(self.committed)
    }

    /// The same for the last precommitted transaction.
    pub fn precommitted_state(&self) -> (u64, Hash) {
        self.state_at(self.precommitted_count())
    }

    /// The Alh of stored transaction `id`.
    pub fn alh(&self, id: u64) -> Option<Hash> {
        self.alhs
            .get(usize::try_from(id).ok()?.checked_sub(1)?)
            .copied()
    }

    /// A committed transaction.
    pub fn transaction(&self, id: u64) -> Option<&ExportedTx> {
        if id > self.committed {
            return None;
        }
        self.stored(id)
    }

    /// A stored transaction, committed or precommitted.
    pub fn stored(&self, id: u64) -> Option<&ExportedTx> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.transactions.get(index)
    }

    /// Commits every stored transaction up to `id`.
    pub fn commit_up_to(&mut self, id: u64) {
        self.committed = self.committed.max(id.min(self.precommitted_count()));
    }

    /// Drops the precommitted transactions after `id` (never a committed one); returns how many.
    pub fn discard_after(&mut self, id: u64) -> u64 {
        let keep = id.max(self.committed);
        let dropped = self.precommitted_count().saturating_sub(keep);
        self.transactions.truncate(keep as usize);
        self.alhs.truncate(keep as usize);
        for writes in self.index.values_mut() {
            writes.retain(|(tx, _)| *tx <= keep);
        }
        self.index.retain(|_, writes| !writes.is_empty());
        dropped
    }

    /// Commits plain key-value entries as a new transaction, as Set does without synchronous
    /// replication.
    pub fn commit(&mut self, kvs: &[(Vec<u8>, Vec<u8>)]) -> TxHeader {
        let header = self.precommit(kvs);
        self.commit_up_to(header.id);
        header
    }

    /// Stores plain key-value entries as a new transaction, not yet committed.
    pub fn precommit(&mut self, kvs: &[(Vec<u8>, Vec<u8>)]) -> TxHeader {
        let entries: Vec<TxEntry> = kvs
            .iter()
            .map(|(key, value)| TxEntry {
                key: [&[PLAIN], key.as_slice()].concat(),
                metadata: Vec::new(),
                value: [&[PLAIN], value.as_slice()].concat(),
            })
            .collect();
        let (last_id, last_alh) = self.precommitted_state();
        let (bl_tx_id, bl_root) = match self.transactions.last() {
            None => (0, [0; 32]),
            Some(previous) => {
                let root: Hash = Sha256::new()
                    .chain_update(previous.header.bl_root)
                    .chain_update(last_alh)
                    .finalize()
                    .into();
                (last_id, root)
            }
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let header = TxHeader {
            id: last_id + 1,
            prev_alh: last_alh,
            ts,
            version: 1,
            metadata: TxMetadata::default(),
            nentries: entries.len() as u32,
            eh: entries_hash(&entries),
            bl_tx_id,
            bl_root,
        };
        let tx = ExportedTx {
            header: header.clone(),
            entries,
            values_truncated: false,
        };
        self.append(tx);
        header
    }

    /// Applies one exported transaction, as replicateTx does on a replica: it must be the next
    /// id and chain to the last Alh. It is stored precommitted; the caller commits it.
    pub fn replicate(&mut self, tx: ExportedTx) -> Result<TxHeader, ReplicateError> {
        let (last_id, last_alh) = self.precommitted_state();
        if tx.header.id <= last_id {
            return Err(ReplicateError::AlreadyCommitted);
        }
        if tx.header.id > last_id + 1 {
            return Err(ReplicateError::WrongOrder);
        }
        if tx.header.prev_alh != last_alh {
            return Err(ReplicateError::InvalidPrevAlh);
        }
        if tx.entries.len() != tx.header.nentries as usize {
            return Err(ReplicateError::EntryCount);
        }
        let header = tx.header.clone();
        self.append(tx);
        Ok(header)
    }

    fn append(&mut self, tx: ExportedTx) {
        let id = tx.header.id;
        self.alhs.push(tx.header.alh());
        for entry in &tx.entries {
            self.index
                .entry(entry.key.clone())
                .or_default()
                .push((id, entry.value.clone()));
        }
        self.transactions.push(tx);
    }

    /// A plain key's committed value and the transaction that wrote it, as Get answers.
    pub fn get(&self, key: &[u8]) -> Option<(u64, Vec<u8>)> {
        let stored = [&[PLAIN], key].concat();
        let (tx, value) = self
            .index
            .get(&stored)?
            .iter()
            .rev()
            .find(|(tx, _)| *tx <= self.committed)?;
        let plain = value.strip_prefix(&[PLAIN]).unwrap_or(value);
        Some((*tx, plain.to_vec()))
    }

    /// Bytes held in entries: the size a benchmark reports.
    pub fn payload_bytes(&self) -> u64 {
        self.transactions
            .iter()
            .flat_map(|t| &t.entries)
            .map(|e| (e.key.len() + e.value.len()) as u64)
            .sum()
    }
}

fn entries_hash(entries: &[TxEntry]) -> Hash {
    let mut hasher = Sha256::new();
    for e in entries {
        hasher.update((e.key.len() as u16).to_be_bytes());
        hasher.update(&e.key);
        hasher.update((e.metadata.len() as u16).to_be_bytes());
        hasher.update(&e.metadata);
        hasher.update((e.value.len() as u32).to_be_bytes());
        hasher.update(&e.value);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_applying_every_export_reaches_the_same_state() {
        let mut primary = Ledger::default();
        primary.commit(&[(b"a".to_vec(), b"1".to_vec())]);
        primary.commit(&[(b"a".to_vec(), b"2".to_vec()), (b"b".to_vec(), vec![])]);
        let mut replica = Ledger::default();
        for id in 1..=2 {
            let message = primary.transaction(id).unwrap().to_message();
            replica
                .replicate(ExportedTx::from_message(&message).unwrap())
                .unwrap();
        }
        assert_eq!(replica.tx_count(), 0, "replicated, not yet committed");
        replica.commit_up_to(2);
        assert_eq!(replica.state(), primary.state());
        assert_eq!(replica.get(b"a"), Some((2, b"2".to_vec())));
        assert_eq!(replica.get(b"b"), Some((2, vec![])));
    }

    #[test]
    fn out_of_order_and_foreign_transactions_are_refused() {
        let mut primary = Ledger::default();
        for i in 0..3u8 {
            primary.commit(&[(vec![i], vec![i])]);
        }
        let mut replica = Ledger::default();
        let tx = |id| primary.transaction(id).unwrap().clone();
        assert_eq!(replica.replicate(tx(1)).unwrap().id, 1);
        replica.discard_after(0);
        assert_eq!(replica.replicate(tx(2)), Err(ReplicateError::WrongOrder));
        replica.replicate(tx(1)).unwrap();
        assert_eq!(
            replica.replicate(tx(1)),
            Err(ReplicateError::AlreadyCommitted)
        );
        let mut other = Ledger::default();
        other.commit(&[(b"x".to_vec(), b"y".to_vec())]);
        other.commit(&[(b"x".to_vec(), b"z".to_vec())]);
        let foreign = other.transaction(2).unwrap().clone();
        assert_eq!(
            replica.replicate(foreign),
            Err(ReplicateError::InvalidPrevAlh)
        );
    }

    #[test]
    fn precommitted_transactions_are_invisible_until_committed_and_only_they_can_be_discarded() {
        let mut ledger = Ledger::default();
        ledger.commit(&[(b"k".to_vec(), b"1".to_vec())]);
        ledger.precommit(&[(b"k".to_vec(), b"2".to_vec())]);
        ledger.precommit(&[(b"k".to_vec(), b"3".to_vec())]);
        assert_eq!((ledger.tx_count(), ledger.precommitted_count()), (1, 3));
        assert_eq!(ledger.get(b"k"), Some((1, b"1".to_vec())));
        assert!(ledger.transaction(2).is_none() && ledger.stored(2).is_some());
        ledger.commit_up_to(2);
        assert_eq!(ledger.get(b"k"), Some((2, b"2".to_vec())));
        assert_eq!(ledger.discard_after(0), 1, "only the uncommitted third");
        assert_eq!(ledger.precommitted_count(), 2);
        let next = ledger.precommit(&[(b"k".to_vec(), b"4".to_vec())]);
        assert_eq!(next.prev_alh, ledger.alh(2).unwrap());
    }
}

//! One database's transaction log, as immudb keeps it: headers chained by a real Alh and a real
//! entries hash eH (both computed by `immudb-txlog`, checked there against a real server), the
//! entries of every transaction, and a key index so that Get answers. Replicas grow their log only
//! by applying exported transactions in order, as immudb's replicator does.
//!
//! A transaction is first precommitted (in the log, ordered), becomes durable when the
//! database's syncer syncs it ([`crate::commits`]), and committed (visible to CurrentState, TxById,
//! exportTx and Get) once durable and within the commit allowance: without synchronous
//! replication there is none; a synchronous primary allows what enough replicas acknowledged, a
//! synchronous replica what its primary allows (`Database::set_replication`). Seeding a ledger
//! directly ([`Ledger::commit`], [`Ledger::replicate`]) syncs at once. Precommitted transactions
//! beyond the committed ones can be discarded (`allowTxDiscarding`); committed ones never.
//!
//! One header field is a stand-in: blRoot (the root of immudb's accumulated hash tree at blTxId)
//! is a SHA-256 chain over the previous Alhs. It is deterministic and feeds the real Alh, so a
//! reordered history still changes every later Alh.

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
    EntriesHash,
}

impl ReplicateError {
    pub fn message(&self) -> &'static str {
        match self {
            ReplicateError::AlreadyCommitted => "tx already committed",
            ReplicateError::WrongOrder => "unexpected error: attempt to commit a tx in wrong order",
            ReplicateError::InvalidPrevAlh => {
                "illegal arguments: attempt to commit a tx with invalid prevAlh"
            }
            ReplicateError::EntriesHash => "illegal arguments: entries hash (Eh) differs",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// Every precommitted transaction; the first `durable` are synced, the first `committed`
    /// committed.
    transactions: Vec<ExportedTx>,
    alhs: Vec<Hash>,
    durable: u64,
    committed: u64,
    /// The external commit allowance of synchronous replication (None: commits need none).
    allowance: Option<u64>,
    /// Stored key (with its prefix) → every (transaction, stored value) that wrote it.
    index: BTreeMap<Vec<u8>, Vec<(u64, Vec<u8>)>>,
}

impl Ledger {
    /// Committed transactions.
    pub fn tx_count(&self) -> u64 {
        self.committed
    }

    /// The last synced transaction (committed unless a commit allowance holds it back).
    pub fn durable_id(&self) -> u64 {
        self.durable
    }

    /// The last precommitted transaction: what the next one must follow.
    pub fn precommitted_id(&self) -> u64 {
        self.transactions.len() as u64
    }

    /// The Alh after transaction `id` (SHA256("") for 0), precommitted or committed.
    pub fn alh(&self, id: u64) -> Hash {
        id.checked_sub(1)
            .and_then(|i| self.alhs.get(i as usize))
            .copied()
            .unwrap_or(EMPTY_ALH)
    }

    /// (last committed transaction id, its Alh): what CurrentState reports; (0, SHA256("")) when
    /// empty.
    pub fn state(&self) -> (u64, Hash) {
        (self.committed, self.alh(self.committed))
    }

    /// (last precommitted transaction id, its Alh).
    pub fn precommitted_state(&self) -> (u64, Hash) {
        let id = self.precommitted_id();
        (id, self.alh(id))
    }

    /// A committed transaction.
    pub fn transaction(&self, id: u64) -> Option<&ExportedTx> {
        if id > self.committed {
            return None;
        }
        self.stored(id)
    }

    /// A stored transaction, committed or only precommitted.
    pub fn stored(&self, id: u64) -> Option<&ExportedTx> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.transactions.get(index)
    }

    /// Makes every transaction up to `id` durable, as a sync does; they commit if allowed.
    pub fn sync_up_to(&mut self, id: u64) {
        self.durable = self.durable.max(id.min(self.precommitted_id()));
        self.recommit();
    }

    /// Sets the external commit allowance anew (None: none needed), as immudb does when a
    /// database's synchronous replication is switched on (allowed up to what is committed) or
    /// off (everything durable commits).
    pub fn set_allowance(&mut self, allowance: Option<u64>) {
        self.allowance = allowance;
        self.recommit();
    }

    /// Whether commits wait for an external allowance (synchronous replication is on).
    pub fn uses_allowance(&self) -> bool {
        self.allowance.is_some()
    }

    /// Raises the commit allowance to `id` (acknowledgements, or a primary's permission).
    pub fn allow_commit_up_to(&mut self, id: u64) {
        if let Some(allowance) = &mut self.allowance {
            *allowance = (*allowance).max(id);
        }
        self.recommit();
    }

    fn recommit(&mut self) {
        let allowed = self.allowance.unwrap_or(u64::MAX);
        self.committed = self.committed.max(self.durable.min(allowed));
    }

    /// Drops the precommitted transactions after `id` (never a committed one); returns how many.
    pub fn discard_after(&mut self, id: u64) -> u64 {
        let keep = id.max(self.committed);
        let dropped = self.precommitted_id().saturating_sub(keep);
        self.transactions.truncate(keep as usize);
        self.alhs.truncate(keep as usize);
        self.durable = self.durable.min(keep);
        for writes in self.index.values_mut() {
            writes.retain(|(tx, _)| *tx <= keep);
        }
        self.index.retain(|_, writes| !writes.is_empty());
        dropped
    }

    /// Commits plain key-value entries as a new, already durable transaction: a seeded database.
    pub fn commit(&mut self, kvs: &[(Vec<u8>, Vec<u8>)]) -> TxHeader {
        let header = self.precommit(kvs);
        self.sync_up_to(header.id);
        header
    }

    /// Precommits plain key-value entries as a new transaction, as Set does before its sync.
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
        let mut tx = ExportedTx {
            header: TxHeader {
                id: last_id + 1,
                prev_alh: last_alh,
                ts,
                version: 1,
                metadata: TxMetadata::default(),
                nentries: entries.len() as u32,
                eh: [0; 32],
                bl_tx_id,
                bl_root,
            },
            entries,
            values_truncated: false,
        };
        tx.header.eh = tx
            .entries_hash()
            .expect("plain version 1 entries always hash");
        let header = tx.header.clone();
        self.append(tx);
        header
    }

    /// Applies one exported transaction and makes it durable at once, as immudb's replicator
    /// does for a replica database (see [`Ledger::precommit_replicated`]).
    pub fn replicate(&mut self, tx: ExportedTx) -> Result<TxHeader, ReplicateError> {
        let header = self.precommit_replicated(tx)?;
        self.sync_up_to(header.id);
        Ok(header)
    }

    /// The checks replicateTx makes before it waits for its turn: the entries hash to the
    /// header's eH, and the transaction is not already in the log.
    pub fn admit(&self, tx: &ExportedTx) -> Result<(), ReplicateError> {
        tx.verify_entries()
            .map_err(|_| ReplicateError::EntriesHash)?;
        if tx.header.id <= self.precommitted_id() {
            return Err(ReplicateError::AlreadyCommitted);
        }
        Ok(())
    }

    /// Precommits one exported transaction, as replicateTx does on a replica: its entries hash to
    /// its eH, it is the next id and it chains to the last Alh.
    pub fn precommit_replicated(&mut self, tx: ExportedTx) -> Result<TxHeader, ReplicateError> {
        self.admit(&tx)?;
        let (last_id, last_alh) = self.precommitted_state();
        if tx.header.id > last_id + 1 {
            return Err(ReplicateError::WrongOrder);
        }
        if tx.header.prev_alh != last_alh {
            return Err(ReplicateError::InvalidPrevAlh);
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
        assert_eq!(replica.state(), primary.state());
        assert_eq!(replica.get(b"a"), Some((2, b"2".to_vec())));
        assert_eq!(replica.get(b"b"), Some((2, vec![])));
        for id in 1..=2 {
            primary.transaction(id).unwrap().verify_entries().unwrap();
        }
    }

    #[test]
    fn precommitted_transactions_are_invisible_until_synced() {
        let mut ledger = Ledger::default();
        ledger.commit(&[(b"a".to_vec(), b"1".to_vec())]);
        let header = ledger.precommit(&[(b"a".to_vec(), b"2".to_vec())]);
        assert_eq!((ledger.tx_count(), ledger.precommitted_id()), (1, 2));
        assert!(ledger.transaction(2).is_none());
        assert_eq!(ledger.precommitted_state(), (2, header.alh()));
        ledger.sync_up_to(5);
        assert_eq!(ledger.state(), (2, header.alh()));
    }

    #[test]
    fn a_commit_allowance_holds_durable_transactions_back_and_only_those_can_be_discarded() {
        let mut ledger = Ledger::default();
        ledger.commit(&[(b"k".to_vec(), b"1".to_vec())]);
        ledger.set_allowance(Some(ledger.tx_count()));
        ledger.commit(&[(b"k".to_vec(), b"2".to_vec())]);
        ledger.commit(&[(b"k".to_vec(), b"3".to_vec())]);
        assert_eq!((ledger.tx_count(), ledger.precommitted_id()), (1, 3));
        assert_eq!(
            ledger.get(b"k"),
            Some((1, b"1".to_vec())),
            "uncommitted writes are not read"
        );
        assert!(ledger.transaction(2).is_none() && ledger.stored(2).is_some());
        ledger.allow_commit_up_to(2);
        assert_eq!(ledger.get(b"k"), Some((2, b"2".to_vec())));
        assert_eq!(ledger.discard_after(0), 1, "only the uncommitted third");
        assert_eq!(ledger.precommitted_id(), 2);
        let next = ledger.precommit(&[(b"k".to_vec(), b"4".to_vec())]);
        assert_eq!(next.prev_alh, ledger.alh(2));
        ledger.set_allowance(None);
        ledger.sync_up_to(3);
        assert_eq!(ledger.tx_count(), 3, "no allowance: durable is committed");
    }

    #[test]
    fn out_of_order_and_foreign_transactions_are_refused() {
        let mut primary = Ledger::default();
        for i in 0..3u8 {
            primary.commit(&[(vec![i], vec![i])]);
        }
        let mut replica = Ledger::default();
        let tx = |id| primary.transaction(id).unwrap().clone();
        assert_eq!(replica.replicate(tx(2)), Err(ReplicateError::WrongOrder));
        replica.replicate(tx(1)).unwrap();
        assert_eq!(
            replica.replicate(tx(1)),
            Err(ReplicateError::AlreadyCommitted)
        );
        let mut tampered = tx(2);
        tampered.entries[0].value.push(0);
        assert_eq!(
            replica.replicate(tampered),
            Err(ReplicateError::EntriesHash)
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
}

//! The entries hash (eH): the root of a binary hash tree over one digest per entry, which the
//! header carries and the Alh covers. Recomputing it from an exported transaction proves every key,
//! value and metadata byte, where the header chain alone proves only the headers.
//!
//! - Entry digest, header version 1: `SHA256(u16 len(md) || md || u16 len(key) || key || hVal)`;
//!   version 0: `SHA256(key || hVal)`, and no metadata. hVal is `SHA256(value)`, or the value field
//!   itself when the export truncated values away (it then holds the digest).
//! - Tree: leaf `SHA256(0x00 || digest)`, inner node `SHA256(0x01 || left || right)`; an odd last
//!   node is carried up unchanged; no entries hash to `SHA256("")`.

use sha2::{Digest, Sha256};

use crate::chain::hex;
use crate::export::{ExportedTx, TxEntry};
use crate::header::{Hash, EMPTY_ALH};

const LEAF: u8 = 0x00;
const INNER: u8 = 0x01;

/// Why a transaction's entries do not prove themselves. Offsets are bytes from the start of the
/// exported transaction; [`EntriesError::shifted`] moves them into a record or an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntriesError {
    #[error("tx {tx}: {} does not hash to the header's eH: computed {}, the header has {}{}",
        span(*first, *last, *offset), hex(computed), hex(expected),
        if first == last { "" } else { " (the hash tree does not tell which of them changed)" })]
    Mismatch {
        tx: u64,
        /// The entries the mismatch lies in: the only one, or all of them.
        first: u32,
        last: u32,
        /// Where entry `first` starts.
        offset: u64,
        computed: Hash,
        expected: Hash,
    },
    #[error("tx {tx}: entry {entry} at byte {offset} carries metadata, which header version 0 does not allow")]
    MetadataInVersion0 { tx: u64, entry: u32, offset: u64 },
    #[error("tx {tx}: entry {entry} at byte {offset} holds a {len}-byte value digest; a truncated value is its 32-byte SHA-256")]
    TruncatedDigest {
        tx: u64,
        entry: u32,
        offset: u64,
        len: usize,
    },
    #[error(
        "tx {tx}: the header announces {announced} entries, the transaction carries {carried}"
    )]
    Count {
        tx: u64,
        announced: u32,
        carried: usize,
    },
}

fn span(first: u32, last: u32, offset: u64) -> String {
    if first == last {
        format!("entry {first} at byte {offset}")
    } else {
        format!("entries {first}..={last} (from byte {offset})")
    }
}

impl EntriesError {
    /// The same error with its byte offset counted from `base` bytes earlier, e.g. from the start
    /// of the record or object that holds the transaction.
    pub fn shifted(mut self, base: u64) -> EntriesError {
        match &mut self {
            EntriesError::Mismatch { offset, .. }
            | EntriesError::MetadataInVersion0 { offset, .. }
            | EntriesError::TruncatedDigest { offset, .. } => *offset += base,
            EntriesError::Count { .. } => {}
        }
        self
    }
}

/// The digest of one entry, as the header `version` defines it.
fn entry_digest(version: u16, entry: &TxEntry, value_digest: &[u8]) -> Hash {
    let mut sha = Sha256::new();
    if version != 0 {
        sha.update((entry.metadata.len() as u16).to_be_bytes());
        sha.update(&entry.metadata);
        sha.update((entry.key.len() as u16).to_be_bytes());
    }
    sha.update(&entry.key);
    sha.update(value_digest);
    sha.finalize().into()
}

/// The root of the tree over `digests`, in order.
pub fn tree_root(digests: &[Hash]) -> Hash {
    if digests.is_empty() {
        return EMPTY_ALH;
    }
    let mut level: Vec<Hash> = digests
        .iter()
        .map(|d| {
            Sha256::new()
                .chain_update([LEAF])
                .chain_update(d)
                .finalize()
                .into()
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => Sha256::new()
                    .chain_update([INNER])
                    .chain_update(left)
                    .chain_update(right)
                    .finalize()
                    .into(),
                [odd] => *odd,
                _ => unreachable!("chunks of at most 2"),
            })
            .collect();
    }
    level[0]
}

impl ExportedTx {
    /// Where each entry starts in [`ExportedTx::to_bytes`]: after `u32 len || header`, each entry
    /// is `u16 len || key || u16 len || md || u32 len || value`.
    pub fn entry_offsets(&self) -> Vec<u64> {
        let mut offset = 4 + self.header.to_bytes().len() as u64;
        self.entries
            .iter()
            .map(|e| {
                let start = offset;
                offset += (2 + e.key.len() + 2 + e.metadata.len() + 4 + e.value.len()) as u64;
                start
            })
            .collect()
    }

    /// The entries hash computed from the entries this transaction carries.
    pub fn entries_hash(&self) -> Result<Hash, EntriesError> {
        let tx = self.header.id;
        let offsets = self.entry_offsets();
        let mut digests = Vec::with_capacity(self.entries.len());
        for (index, (entry, offset)) in self.entries.iter().zip(offsets).enumerate() {
            let index = index as u32;
            if self.header.version == 0 && !entry.metadata.is_empty() {
                return Err(EntriesError::MetadataInVersion0 {
                    tx,
                    entry: index,
                    offset,
                });
            }
            let digest = if self.values_truncated {
                if entry.value.len() != 32 {
                    return Err(EntriesError::TruncatedDigest {
                        tx,
                        entry: index,
                        offset,
                        len: entry.value.len(),
                    });
                }
                entry_digest(self.header.version, entry, &entry.value)
            } else {
                entry_digest(self.header.version, entry, &Sha256::digest(&entry.value))
            };
            digests.push(digest);
        }
        Ok(tree_root(&digests))
    }

    /// Checks that the entries are the ones the header's eH commits to.
    pub fn verify_entries(&self) -> Result<(), EntriesError> {
        let tx = self.header.id;
        if self.entries.len() != self.header.nentries as usize {
            return Err(EntriesError::Count {
                tx,
                announced: self.header.nentries,
                carried: self.entries.len(),
            });
        }
        let computed = self.entries_hash()?;
        if computed == self.header.eh {
            return Ok(());
        }
        Err(EntriesError::Mismatch {
            tx,
            first: 0,
            last: self.entries.len().saturating_sub(1) as u32,
            offset: self.entry_offsets().first().copied().unwrap_or(0),
            computed,
            expected: self.header.eh,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{TxHeader, TxMetadata};

    fn entry(key: &[u8], md: &[u8], value: &[u8]) -> TxEntry {
        TxEntry {
            key: key.to_vec(),
            metadata: md.to_vec(),
            value: value.to_vec(),
        }
    }

    fn tx(version: u16, entries: Vec<TxEntry>) -> ExportedTx {
        let mut tx = ExportedTx {
            header: TxHeader {
                id: 4,
                prev_alh: EMPTY_ALH,
                ts: 1,
                version,
                metadata: TxMetadata::default(),
                nentries: entries.len() as u32,
                eh: [0; 32],
                bl_tx_id: 0,
                bl_root: [0; 32],
            },
            entries,
            values_truncated: false,
        };
        tx.header.eh = tx.entries_hash().unwrap();
        tx
    }

    fn sha(parts: &[&[u8]]) -> Hash {
        let mut s = Sha256::new();
        for p in parts {
            s.update(p);
        }
        s.finalize().into()
    }

    #[test]
    fn the_tree_carries_an_odd_node_up() {
        let d: Vec<Hash> = (0..3u8).map(|i| [i; 32]).collect();
        let leaf = |h: &Hash| sha(&[&[0], h]);
        let inner = |l: &Hash, r: &Hash| sha(&[&[1], l, r]);
        assert_eq!(tree_root(&[]), EMPTY_ALH);
        assert_eq!(tree_root(&d[..1]), leaf(&d[0]));
        let expected = inner(&inner(&leaf(&d[0]), &leaf(&d[1])), &leaf(&d[2]));
        assert_eq!(tree_root(&d), expected);
    }

    #[test]
    fn version_1_digests_cover_metadata_and_version_0_refuses_it() {
        let plain = tx(1, vec![entry(b"\0k", b"", b"\0v")]);
        let expected_digest = sha(&[&[0, 0], &[0, 2], b"\0k", &sha(&[b"\0v"])]);
        assert_eq!(plain.header.eh, tree_root(&[expected_digest]));
        plain.verify_entries().unwrap();

        let with_md = tx(1, vec![entry(b"\0k", &[0, 1], b"\0v")]);
        assert_ne!(with_md.header.eh, plain.header.eh, "metadata is hashed");

        let v0 = tx(0, vec![entry(b"\0k", b"", b"\0v")]);
        assert_eq!(v0.header.eh, tree_root(&[sha(&[b"\0k", &sha(&[b"\0v"])])]));
        let mut v0_md = v0.clone();
        v0_md.entries[0].metadata = vec![1];
        assert!(matches!(
            v0_md.verify_entries(),
            Err(EntriesError::MetadataInVersion0 { entry: 0, .. })
        ));
    }

    #[test]
    fn truncated_values_hash_as_their_digest() {
        let full = tx(1, vec![entry(b"\0a", b"", b"\0value")]);
        let mut truncated = full.clone();
        truncated.values_truncated = true;
        truncated.entries[0].value = sha(&[b"\0value"]).to_vec();
        truncated.verify_entries().unwrap();
        truncated.entries[0].value.pop();
        assert!(matches!(
            truncated.verify_entries(),
            Err(EntriesError::TruncatedDigest { len: 31, .. })
        ));
    }

    #[test]
    fn a_changed_value_names_its_entry_and_offset() {
        let mut one = tx(1, vec![entry(b"\0a", b"", b"\0one")]);
        one.entries[0].value[1] ^= 1;
        let header_len = one.header.to_bytes().len() as u64;
        let error = one.verify_entries().unwrap_err();
        assert!(
            matches!(error, EntriesError::Mismatch { first: 0, last: 0, offset, .. } if offset == 4 + header_len),
            "{error}"
        );
        assert!(error
            .to_string()
            .starts_with(&format!("tx 4: entry 0 at byte {}", 4 + header_len)));
        assert!(error
            .clone()
            .shifted(100)
            .to_string()
            .contains(&format!("byte {}", 104 + header_len)));

        let mut three = tx(
            1,
            vec![
                entry(b"\0a", b"", b"1"),
                entry(b"\0b", b"", b"2"),
                entry(b"\0c", b"", b"3"),
            ],
        );
        three.entries[2].value[0] ^= 1;
        let error = three.verify_entries().unwrap_err();
        assert!(error.to_string().contains("entries 0..=2"), "{error}");
        three.entries.pop();
        assert!(matches!(
            three.verify_entries(),
            Err(EntriesError::Count {
                announced: 3,
                carried: 2,
                ..
            })
        ));
    }
}

//! A transaction header and its Alh. All integers are big-endian.
//!
//! The serialised header (inside an exported transaction) is
//! `u64 id || prevAlh || i64 ts || u16 version || V || eH || u64 blTxId || blRoot`, where V is
//! `u16 nentries` for version 0 and `u16 len(md) || md || u32 nentries` for version 1. The Alh is
//! `SHA256(u64 id || prevAlh || SHA256(everything after prevAlh))`: the same bytes, so one
//! serialiser serves both.

use sha2::{Digest, Sha256};

use crate::{Cursor, FormatError};

pub type Hash = [u8; 32];

/// The Alh before the first transaction, `SHA256("")`: the prevAlh of transaction 1 and the txHash
/// `CurrentState` reports for an empty database.
pub const EMPTY_ALH: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

const TAG_TRUNCATED_TX_ID: u8 = 0;
const TAG_EXTRA: u8 = 1;

/// Transaction metadata; empty unless the database was truncated or the writer added extra bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxMetadata {
    pub truncated_tx_id: u64,
    pub extra: Vec<u8>,
}

impl TxMetadata {
    /// `0x00 || u64 truncatedTxID` when set, then `0x01 || u16 len || extra` when not empty.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.truncated_tx_id > 0 {
            out.push(TAG_TRUNCATED_TX_ID);
            out.extend_from_slice(&self.truncated_tx_id.to_be_bytes());
        }
        if !self.extra.is_empty() {
            out.push(TAG_EXTRA);
            out.extend_from_slice(&(self.extra.len() as u16).to_be_bytes());
            out.extend_from_slice(&self.extra);
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<TxMetadata, FormatError> {
        let mut md = TxMetadata::default();
        let mut cursor = Cursor::new(bytes);
        while cursor.remaining() > 0 {
            match cursor.u8("metadata tag")? {
                TAG_TRUNCATED_TX_ID => md.truncated_tx_id = cursor.u64("truncatedTxID")?,
                TAG_EXTRA => {
                    let len = cursor.u16("extra length")? as usize;
                    md.extra = cursor.take(len, "extra")?.to_vec();
                }
                _ => return Err(FormatError::Metadata("unknown tag")),
            }
        }
        Ok(md)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxHeader {
    pub id: u64,
    pub prev_alh: Hash,
    pub ts: i64,
    pub version: u16,
    pub metadata: TxMetadata,
    pub nentries: u32,
    pub eh: Hash,
    pub bl_tx_id: u64,
    pub bl_root: Hash,
}

impl TxHeader {
    /// Everything after prevAlh: the bytes the inner hash covers.
    fn inner_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&self.ts.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        if self.version == 0 {
            out.extend_from_slice(&(self.nentries as u16).to_be_bytes());
        } else {
            let md = self.metadata.to_bytes();
            out.extend_from_slice(&(md.len() as u16).to_be_bytes());
            out.extend_from_slice(&md);
            out.extend_from_slice(&self.nentries.to_be_bytes());
        }
        out.extend_from_slice(&self.eh);
        out.extend_from_slice(&self.bl_tx_id.to_be_bytes());
        out.extend_from_slice(&self.bl_root);
        out
    }

    pub fn inner_hash(&self) -> Hash {
        Sha256::digest(self.inner_bytes()).into()
    }

    /// The accumulated linear hash: what `CurrentState.txHash` reports at this transaction.
    pub fn alh(&self) -> Hash {
        let mut hasher = Sha256::new();
        hasher.update(self.id.to_be_bytes());
        hasher.update(self.prev_alh);
        hasher.update(self.inner_hash());
        hasher.finalize().into()
    }

    /// The header as an exported transaction carries it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let inner = self.inner_bytes();
        let mut out = Vec::with_capacity(40 + inner.len());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.prev_alh);
        out.extend_from_slice(&inner);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<TxHeader, FormatError> {
        let mut c = Cursor::new(bytes);
        let id = c.u64("header id")?;
        let prev_alh = c.array("header prevAlh")?;
        let ts = c.u64("header ts")? as i64;
        let version = c.u16("header version")?;
        let (metadata, nentries) = match version {
            0 => (TxMetadata::default(), u32::from(c.u16("header nentries")?)),
            1 => {
                let len = c.u16("header metadata length")? as usize;
                let metadata = TxMetadata::from_bytes(c.take(len, "header metadata")?)?;
                (metadata, c.u32("header nentries")?)
            }
            other => return Err(FormatError::HeaderVersion(other)),
        };
        let header = TxHeader {
            id,
            prev_alh,
            ts,
            version,
            metadata,
            nentries,
            eh: c.array("header eH")?,
            bl_tx_id: c.u64("header blTxId")?,
            bl_root: c.array("header blRoot")?,
        };
        if c.remaining() > 0 {
            return Err(FormatError::TrailingBytes(c.remaining()));
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_alh_is_the_hash_of_nothing() {
        assert_eq!(EMPTY_ALH, <[u8; 32]>::from(Sha256::digest(b"")));
    }

    #[test]
    fn metadata_round_trips_and_rejects_unknown_tags() {
        let md = TxMetadata {
            truncated_tx_id: 7,
            extra: b"x".to_vec(),
        };
        assert_eq!(md.to_bytes(), [0, 0, 0, 0, 0, 0, 0, 0, 7, 1, 0, 1, b'x']);
        assert_eq!(TxMetadata::from_bytes(&md.to_bytes()).unwrap(), md);
        assert_eq!(TxMetadata::default().to_bytes(), Vec::<u8>::new());
        assert!(TxMetadata::from_bytes(&[9]).is_err());
    }

    #[test]
    fn version_0_headers_round_trip_with_a_short_entry_count() {
        let header = TxHeader {
            id: 3,
            prev_alh: [1; 32],
            ts: 5,
            version: 0,
            metadata: TxMetadata::default(),
            nentries: 2,
            eh: [2; 32],
            bl_tx_id: 2,
            bl_root: [3; 32],
        };
        let bytes = header.to_bytes();
        assert_eq!(bytes.len(), 8 + 32 + 8 + 2 + 2 + 32 + 8 + 32);
        assert_eq!(TxHeader::from_bytes(&bytes).unwrap(), header);
        let mut v9 = bytes.clone();
        v9[48..50].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(
            TxHeader::from_bytes(&v9),
            Err(FormatError::HeaderVersion(9))
        );
    }
}

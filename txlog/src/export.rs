//! An exported transaction: what `exportTx` streams and `replicateTx` applies.
//!
//! The transaction is `u32 len(header) || header`, then per entry `u16 len(key) || key ||
//! u16 len(md) || md || u32 len(value) || value`, then `u16 1 || flag`, where flag 1 means the
//! values were truncated away and each value field holds the value's SHA-256 instead.
//!
//! On the wire (gRPC `Chunk`s) and in a hot-backup record the transaction travels as one stream
//! message: `u64 len(transaction) || transaction`, cut into chunks anywhere.

use crate::header::TxHeader;
use crate::{Cursor, FormatError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxEntry {
    /// The key as stored, with immudb's one-byte kind prefix (0 for a plain key-value entry).
    pub key: Vec<u8>,
    /// The entry's key-value metadata (deletion, expiration, non-indexable), usually empty.
    pub metadata: Vec<u8>,
    /// The value as stored, with its one-byte kind prefix; its digest when values are truncated.
    pub value: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedTx {
    pub header: TxHeader,
    pub entries: Vec<TxEntry>,
    pub values_truncated: bool,
}

impl ExportedTx {
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = self.header.to_bytes();
        let values: usize = self
            .entries
            .iter()
            .map(|e| e.key.len() + e.metadata.len() + e.value.len() + 8)
            .sum();
        let mut out = Vec::with_capacity(4 + header.len() + values + 3);
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        for entry in &self.entries {
            out.extend_from_slice(&(entry.key.len() as u16).to_be_bytes());
            out.extend_from_slice(&entry.key);
            out.extend_from_slice(&(entry.metadata.len() as u16).to_be_bytes());
            out.extend_from_slice(&entry.metadata);
            out.extend_from_slice(&(entry.value.len() as u32).to_be_bytes());
            out.extend_from_slice(&entry.value);
        }
        out.extend_from_slice(&1u16.to_be_bytes());
        out.push(u8::from(self.values_truncated));
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<ExportedTx, FormatError> {
        let mut c = Cursor::new(bytes);
        let header_len = c.u32("header length")? as usize;
        let header = TxHeader::from_bytes(c.take(header_len, "header")?)?;
        let mut entries = Vec::with_capacity(header.nentries.min(1024) as usize);
        for _ in 0..header.nentries {
            let key_len = c.u16("entry key length")? as usize;
            let key = c.take(key_len, "entry key")?.to_vec();
            let md_len = c.u16("entry metadata length")? as usize;
            let metadata = c.take(md_len, "entry metadata")?.to_vec();
            let value_len = c.u32("entry value length")? as usize;
            let value = c.take(value_len, "entry value")?.to_vec();
            entries.push(TxEntry {
                key,
                metadata,
                value,
            });
        }
        // immudb before 1.9 wrote no truncation section: no bytes left means full values.
        let mut values_truncated = false;
        if c.remaining() > 0 {
            let len = c.u16("truncation flag length")? as usize;
            let flag = c.take(len, "truncation flag")?;
            if let Some(&first) = flag.first() {
                if first > 1 {
                    return Err(FormatError::TruncationFlag(first));
                }
                values_truncated = first == 1;
            }
        }
        if c.remaining() > 0 {
            return Err(FormatError::TrailingBytes(c.remaining()));
        }
        Ok(ExportedTx {
            header,
            entries,
            values_truncated,
        })
    }

    /// The transaction as one stream message, as `exportTx` sends it and a hot-backup stores it.
    pub fn to_message(&self) -> Vec<u8> {
        frame(&self.to_bytes())
    }

    pub fn from_message(message: &[u8]) -> Result<ExportedTx, FormatError> {
        ExportedTx::from_bytes(unframe(message)?)
    }
}

/// `u64 len || payload`: immudb's stream message framing.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of one whole stream message; the announced length must match exactly.
pub fn unframe(message: &[u8]) -> Result<&[u8], FormatError> {
    let mut c = Cursor::new(message);
    let announced = c.u64("stream message length")?;
    let payload = &message[8..];
    if announced != payload.len() as u64 {
        return Err(FormatError::MessageLength {
            announced,
            carried: payload.len(),
        });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{TxMetadata, EMPTY_ALH};

    fn sample() -> ExportedTx {
        ExportedTx {
            header: TxHeader {
                id: 1,
                prev_alh: EMPTY_ALH,
                ts: 10,
                version: 1,
                metadata: TxMetadata::default(),
                nentries: 2,
                eh: [4; 32],
                bl_tx_id: 0,
                bl_root: [0; 32],
            },
            entries: vec![
                TxEntry {
                    key: b"\0a".to_vec(),
                    metadata: vec![],
                    value: b"\0one".to_vec(),
                },
                TxEntry {
                    key: b"\0b".to_vec(),
                    metadata: vec![7],
                    value: b"\0".to_vec(),
                },
            ],
            values_truncated: false,
        }
    }

    #[test]
    fn a_transaction_survives_the_round_trip_and_its_framing() {
        let tx = sample();
        assert_eq!(ExportedTx::from_message(&tx.to_message()).unwrap(), tx);
    }

    #[test]
    fn every_cut_short_transaction_is_rejected() {
        let bytes = sample().to_bytes();
        for len in 0..bytes.len() - 3 {
            assert!(
                ExportedTx::from_bytes(&bytes[..len]).is_err(),
                "cut at {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            ExportedTx::from_bytes(&longer),
            Err(FormatError::TrailingBytes(1))
        );
    }

    #[test]
    fn a_message_must_carry_what_it_announces() {
        let mut message = sample().to_message();
        message.pop();
        assert!(matches!(
            unframe(&message),
            Err(FormatError::MessageLength { .. })
        ));
    }
}

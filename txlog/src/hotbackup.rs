//! immuadmin's hot-backup file: one record per transaction, in ascending ids without gaps.
//!
//! A record is a 30-byte header, `"IMMUBACKUP" || u32 format version (1) || u64 tx id ||
//! u32 checksum length (32) || u32 content length`, then the checksum (the transaction's Alh), then
//! the content: the exported transaction as one stream message (`u64 len || transaction`).
//! Records are self-delimiting, so files of consecutive ranges concatenate into one valid file.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::export::ExportedTx;
use crate::header::Hash;
use crate::FormatError;

pub const MAGIC: &[u8; 10] = b"IMMUBACKUP";
pub const FORMAT_VERSION: u32 = 1;
pub const RECORD_HEADER_LEN: usize = 30;
const CHECKSUM_LEN: u32 = 32;
/// Where the exported transaction starts in a record: after the record header, the checksum and
/// the stream message's `u64` length.
pub const CONTENT_OFFSET: u64 = (RECORD_HEADER_LEN + CHECKSUM_LEN as usize + 8) as u64;
/// A bound on one record's content, far above immudb's largest transaction (maxTxEntries x
/// maxValueLen are much smaller by default), so a corrupted length cannot make a reader allocate
/// gigabytes.
pub const MAX_CONTENT_LEN: u32 = 512 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub tx_id: u64,
    /// The transaction's Alh.
    pub checksum: Hash,
    /// The exported transaction as one stream message.
    pub content: Vec<u8>,
}

impl Record {
    pub fn header_bytes(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut out = [0u8; RECORD_HEADER_LEN];
        out[..10].copy_from_slice(MAGIC);
        out[10..14].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        out[14..22].copy_from_slice(&self.tx_id.to_be_bytes());
        out[22..26].copy_from_slice(&CHECKSUM_LEN.to_be_bytes());
        out[26..30].copy_from_slice(&(self.content.len() as u32).to_be_bytes());
        out
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len() as usize);
        out.extend_from_slice(&self.header_bytes());
        out.extend_from_slice(&self.checksum);
        out.extend_from_slice(&self.content);
        out
    }

    pub fn encoded_len(&self) -> u64 {
        (RECORD_HEADER_LEN + self.checksum.len() + self.content.len()) as u64
    }

    pub fn transaction(&self) -> Result<ExportedTx, FormatError> {
        ExportedTx::from_message(&self.content)
    }
}

/// What is wrong with one record of a file.
#[derive(Debug, thiserror::Error)]
pub enum RecordProblem {
    #[error("the file ends inside the record ({0})")]
    Truncated(&'static str),
    #[error("the record does not start with IMMUBACKUP")]
    Magic,
    #[error("format version {0}, expected 1")]
    Version(u32),
    #[error("checksum length {0}, expected 32")]
    ChecksumLength(u32),
    #[error("content length {0} exceeds the {MAX_CONTENT_LEN}-byte bound")]
    ContentLength(u32),
    #[error("reading failed: {0}")]
    Io(std::io::Error),
}

/// A record that could not be read, located so that an operator can find it.
#[derive(Debug, thiserror::Error)]
#[error("record {index} ({tx}) at byte {offset}: {problem}", tx = tx_id.map_or("tx unknown".to_string(), |id| format!("tx {id}")))]
pub struct ReadError {
    /// 0-based position of the record in the file.
    pub index: u64,
    pub tx_id: Option<u64>,
    /// Where the record starts in the file.
    pub offset: u64,
    pub problem: RecordProblem,
}

/// Reads records one at a time: memory holds one record, never the file.
pub struct RecordReader<R> {
    inner: R,
    offset: u64,
    index: u64,
}

impl<R: AsyncRead + Unpin> RecordReader<R> {
    pub fn new(inner: R) -> RecordReader<R> {
        RecordReader {
            inner,
            offset: 0,
            index: 0,
        }
    }

    /// Bytes consumed so far: the offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next record, `None` at a clean end of file (between records).
    pub async fn next(&mut self) -> Result<Option<Record>, ReadError> {
        let (index, offset) = (self.index, self.offset);
        let fail = |tx_id, problem| ReadError {
            index,
            tx_id,
            offset,
            problem,
        };
        let mut header = [0u8; RECORD_HEADER_LEN];
        match read_full(&mut self.inner, &mut header).await {
            Ok(0) => return Ok(None),
            Ok(n) if n < RECORD_HEADER_LEN => {
                return Err(fail(None, RecordProblem::Truncated("header")))
            }
            Ok(_) => {}
            Err(e) => return Err(fail(None, RecordProblem::Io(e))),
        }
        if &header[..10] != MAGIC {
            return Err(fail(None, RecordProblem::Magic));
        }
        let field = |range: std::ops::Range<usize>| {
            u32::from_be_bytes(header[range].try_into().expect("4 bytes"))
        };
        let tx_id = u64::from_be_bytes(header[14..22].try_into().expect("8 bytes"));
        let (version, checksum_len, content_len) = (field(10..14), field(22..26), field(26..30));
        if version != FORMAT_VERSION {
            return Err(fail(Some(tx_id), RecordProblem::Version(version)));
        }
        if checksum_len != CHECKSUM_LEN {
            return Err(fail(
                Some(tx_id),
                RecordProblem::ChecksumLength(checksum_len),
            ));
        }
        if content_len > MAX_CONTENT_LEN {
            return Err(fail(Some(tx_id), RecordProblem::ContentLength(content_len)));
        }
        let mut checksum = [0u8; 32];
        match read_full(&mut self.inner, &mut checksum).await {
            Ok(32) => {}
            Ok(_) => return Err(fail(Some(tx_id), RecordProblem::Truncated("checksum"))),
            Err(e) => return Err(fail(Some(tx_id), RecordProblem::Io(e))),
        }
        let mut content = vec![0u8; content_len as usize];
        match read_full(&mut self.inner, &mut content).await {
            Ok(n) if n == content.len() => {}
            Ok(_) => return Err(fail(Some(tx_id), RecordProblem::Truncated("content"))),
            Err(e) => return Err(fail(Some(tx_id), RecordProblem::Io(e))),
        }
        let record = Record {
            tx_id,
            checksum,
            content,
        };
        self.offset += record.encoded_len();
        self.index += 1;
        Ok(Some(record))
    }
}

/// Fills `buf` unless the stream ends first; returns how much it read.
async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

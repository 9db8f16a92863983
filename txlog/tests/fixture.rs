//! Ground truth from a real immudb 1.10.0 (`tests/fixtures/immudb-1.10.0/`): the Alh of every
//! recorded header, and immuadmin's hot-backup file read, verified and written back byte for byte.

use std::path::PathBuf;

use base64::Engine;
use immudb_txlog::hotbackup::RecordProblem;
use immudb_txlog::hotbackup::CONTENT_OFFSET;
use immudb_txlog::{
    Chain, ChainError, EntriesError, Record, RecordReader, TxHeader, TxMetadata, EMPTY_ALH,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/immudb-1.10.0")
        .join(name)
}

fn b64(value: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("a base64 string"))
        .expect("valid base64")
}

fn hash(value: &serde_json::Value) -> [u8; 32] {
    b64(value).try_into().expect("32 bytes")
}

/// (header, the Alh CurrentState reported right after it committed) for each of the 8.
fn recorded() -> Vec<(TxHeader, [u8; 32])> {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("fixturedb.json")).unwrap()).unwrap();
    json["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let header = TxHeader {
                id: t["id"].as_u64().unwrap(),
                prev_alh: hash(&t["prevAlh"]),
                ts: t["ts"].as_i64().unwrap(),
                version: t["version"].as_u64().unwrap() as u16,
                metadata: TxMetadata {
                    truncated_tx_id: t["metadata"]["truncatedTxID"].as_u64().unwrap(),
                    extra: b64(&t["metadata"]["extra"]),
                },
                nentries: t["nentries"].as_u64().unwrap() as u32,
                eh: hash(&t["eH"]),
                bl_tx_id: t["blTxId"].as_u64().unwrap(),
                bl_root: hash(&t["blRoot"]),
            };
            (header, hash(&t["alh_from_CurrentState"]))
        })
        .collect()
}

async fn records(bytes: &[u8]) -> Vec<Record> {
    let mut reader = RecordReader::new(bytes);
    let mut out = Vec::new();
    while let Some(record) = reader.next().await.expect("a valid file") {
        out.push(record);
    }
    out
}

#[test]
fn the_alh_of_every_recorded_header_is_what_the_server_reported() {
    let recorded = recorded();
    assert_eq!(recorded.len(), 8);
    assert_eq!(recorded[0].0.prev_alh, EMPTY_ALH);
    for (header, alh) in &recorded {
        assert_eq!(header.alh(), *alh, "tx {}", header.id);
    }
    // Each header's prevAlh is the previous Alh: the recorded history is one chain.
    for pair in recorded.windows(2) {
        assert_eq!(pair[1].0.prev_alh, pair[0].1, "tx {}", pair[1].0.id);
    }
}

#[test]
fn a_changed_header_field_changes_the_alh() {
    let (header, alh) = recorded().remove(3);
    let mut changed = header.clone();
    changed.ts += 1;
    assert_ne!(changed.alh(), alh);
    let mut changed = header;
    changed.metadata.truncated_tx_id = 1;
    assert_ne!(changed.alh(), alh);
}

#[tokio::test]
async fn the_hot_backup_file_holds_8_verified_records_that_match_tx_by_id() {
    let bytes = std::fs::read(fixture("fixturedb.immubackup")).unwrap();
    let records = records(&bytes).await;
    assert_eq!(records.len(), 8);
    let recorded = recorded();
    let mut chain = Chain::genesis();
    for (record, (header, alh)) in records.iter().zip(&recorded) {
        assert_eq!(record.tx_id, header.id);
        assert_eq!(record.checksum, *alh, "tx {}", header.id);
        let tx = chain.verify(record).unwrap();
        assert_eq!(
            &tx.header, header,
            "the exported header is the one TxById returned"
        );
        assert_eq!(tx.entries.len() as u32, header.nentries);
        assert!(!tx.values_truncated);
        // Re-encoding the decoded transaction gives immudb's exact bytes.
        assert_eq!(tx.to_message(), record.content, "tx {}", header.id);
    }
    let first = records[0].transaction().unwrap();
    assert_eq!(first.entries[0].key, b"\0k1");
    assert_eq!(first.entries[0].value, b"\0v1");
    let big = records[7].transaction().unwrap();
    assert_eq!(big.entries[0].value.len(), 65536 + 1);
}

#[tokio::test]
async fn writing_the_records_back_gives_the_same_file() {
    let bytes = std::fs::read(fixture("fixturedb.immubackup")).unwrap();
    let written: Vec<u8> = records(&bytes)
        .await
        .iter()
        .flat_map(Record::to_bytes)
        .collect();
    assert_eq!(written.len(), bytes.len());
    assert!(written == bytes, "byte-identical rewrite");
}

#[tokio::test]
async fn a_truncated_file_names_the_record_and_its_offset() {
    let bytes = std::fs::read(fixture("fixturedb.immubackup")).unwrap();
    let records = records(&bytes).await;
    let offset_of_last: u64 = records[..7].iter().map(Record::encoded_len).sum();
    for cut in [
        offset_of_last + 10,
        offset_of_last + 40,
        bytes.len() as u64 - 1,
    ] {
        let mut reader = RecordReader::new(&bytes[..cut as usize]);
        for _ in 0..7 {
            reader.next().await.unwrap().unwrap();
        }
        let error = reader.next().await.unwrap_err();
        assert_eq!((error.index, error.offset), (7, offset_of_last));
        assert!(
            matches!(error.problem, RecordProblem::Truncated(_)),
            "{error}"
        );
        assert!(error.to_string().starts_with("record 7 ("), "{error}");
    }
}

#[tokio::test]
async fn every_recorded_entries_hash_is_recomputed_from_the_entries() {
    let bytes = std::fs::read(fixture("fixturedb.immubackup")).unwrap();
    let recorded = recorded();
    let records = records(&bytes).await;
    let mut counts = Vec::new();
    for (record, (header, _)) in records.iter().zip(&recorded) {
        let tx = record.transaction().unwrap();
        assert_eq!(tx.entries_hash().unwrap(), header.eh, "tx {}", header.id);
        counts.push(tx.entries.len());
    }
    // One entry, an odd count (3: a node carried up), 4, 2, and a 64 KiB value.
    assert_eq!(counts, [1, 3, 1, 4, 2, 1, 1, 1]);
}

/// Byte offsets of each record in the fixture file.
fn record_offsets(records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .scan(0u64, |offset, r| {
            let start = *offset;
            *offset += r.encoded_len();
            Some(start)
        })
        .collect()
}

/// Runs the whole file through the chain; the first error, as text.
async fn first_failure(bytes: &[u8]) -> Option<String> {
    let mut reader = RecordReader::new(bytes);
    let mut chain = Chain::genesis();
    loop {
        let offset = reader.offset();
        match reader.next().await {
            Ok(Some(record)) => {
                if let Err(e) = chain.verify(&record) {
                    return Some(format!("record at byte {offset}: {e}"));
                }
            }
            Ok(None) => return None,
            Err(e) => return Some(e.to_string()),
        }
    }
}

#[tokio::test]
async fn a_flipped_value_byte_is_caught_naming_its_entry_and_offset() {
    let bytes = std::fs::read(fixture("fixturedb.immubackup")).unwrap();
    let records = records(&bytes).await;
    let offsets = record_offsets(&records);
    // tx 8: one entry whose value is 64 KiB; flip a byte in its middle.
    let tx = records[7].transaction().unwrap();
    let entry_start = CONTENT_OFFSET + tx.entry_offsets()[0];
    let value_start = entry_start + 2 + tx.entries[0].key.len() as u64 + 2 + 4;
    let mut corrupted = bytes.clone();
    corrupted[(offsets[7] + value_start) as usize + 30_000] ^= 0x01;
    let mut reader = RecordReader::new(&corrupted[..]);
    let mut chain = Chain::genesis();
    for _ in 0..7 {
        chain
            .verify(&reader.next().await.unwrap().unwrap())
            .unwrap();
    }
    let record = reader.next().await.unwrap().unwrap();
    let Err(ChainError::Entries(EntriesError::Mismatch {
        tx,
        first,
        last,
        offset,
        expected,
        ..
    })) = chain.verify(&record)
    else {
        panic!("the flipped value byte went unnoticed");
    };
    assert_eq!((tx, first, last), (8, 0, 0));
    assert_eq!(offset, entry_start, "the entry's offset within the record");
    assert_eq!(expected, recorded()[7].0.eh);

    // In tx 2 (three entries) the hash tree cannot tell which entry changed: all three are named.
    let tx2 = records[1].transaction().unwrap();
    let key_of_b = tx2.entries[1].key.len();
    let value_of_b =
        (offsets[1] + CONTENT_OFFSET + tx2.entry_offsets()[1]) as usize + 2 + key_of_b + 2 + 4 + 5;
    let mut corrupted = bytes.clone();
    corrupted[value_of_b] ^= 0x01;
    let failed = first_failure(&corrupted).await.unwrap();
    assert!(failed.contains("tx 2: entries 0..=2"), "{failed}");
}

#[tokio::test]
async fn a_flipped_byte_anywhere_is_caught() {
    let bytes = std::fs::read(fixture("fixturedb.immubackup")).unwrap();
    // Every byte of record 2 (tx 3), values included: the checksum is the Alh of the header, whose
    // eH is the hash tree over the entries.
    let records = records(&bytes).await;
    let start = (records[0].encoded_len() + records[1].encoded_len()) as usize;
    let end = start + records[2].encoded_len() as usize;
    for position in start..end {
        let mut corrupted = bytes.clone();
        corrupted[position] ^= 0x01;
        let failed = first_failure(&corrupted)
            .await
            .unwrap_or_else(|| panic!("a flipped byte at {position} went unnoticed"));
        assert!(
            failed.contains("tx 3") || failed.contains("record 2"),
            "{position}: {failed}"
        );
    }
}

#[tokio::test]
async fn a_gap_and_a_foreign_history_are_refused() {
    let bytes = std::fs::read(fixture("fixturedb.immubackup")).unwrap();
    let records = records(&bytes).await;
    let mut chain = Chain::genesis();
    chain.verify(&records[0]).unwrap();
    assert_eq!(
        chain.verify(&records[2]).unwrap_err(),
        ChainError::Gap { last: 1, found: 3 }
    );
    // Another database's tx 2 would carry another prevAlh.
    let mut other = Chain::after(1, [7; 32]);
    assert!(matches!(
        other.verify(&records[1]),
        Err(ChainError::PrevAlh { tx: 2, .. })
    ));
}

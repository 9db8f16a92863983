//! What a destination holds, without I/O: the object names, the manifest each run writes, the
//! chains they form, and which chains retention deletes.
//!
//! Layout under the prefix: `<database>/<chain>/<first>-<last>.immubackup` holds immuadmin
//! hot-backup records for transactions first..=last, and `<first>-<last>.manifest.json` beside it
//! describes it. A chain starts at transaction 1 (a full backup) and each later object continues
//! it (an incremental backup), so a chain's objects concatenated in order are one hot-backup file
//! of the whole history. The manifest is written last: an object without one is an unfinished
//! run and is ignored.

use chrono::{DateTime, Utc};
use immudb_txlog::{hex, Hash, EMPTY_ALH};
use serde::{Deserialize, Serialize};

pub const MANIFEST_FORMAT: u32 = 1;
const OBJECT_SUFFIX: &str = ".immubackup";
const MANIFEST_SUFFIX: &str = ".manifest.json";

/// What one run wrote, as `restore` and operators read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub database: String,
    pub chain: String,
    /// The backup object, relative to the prefix.
    pub object: String,
    pub first_tx: u64,
    pub last_tx: u64,
    /// Alh of transaction first_tx - 1: what the first record must chain to.
    pub prev_alh: String,
    pub last_alh: String,
    pub immudb_version: String,
    pub source: String,
    pub created: DateTime<Utc>,
    pub records: u64,
    pub bytes: u64,
    /// SHA-256 of the whole object, checked before a restore writes anything.
    pub sha256: String,
}

pub fn chain_id(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

fn range_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}")
}

pub fn object_key(database: &str, chain: &str, first: u64, last: u64) -> String {
    format!(
        "{database}/{chain}/{}{OBJECT_SUFFIX}",
        range_name(first, last)
    )
}

pub fn manifest_key(database: &str, chain: &str, first: u64, last: u64) -> String {
    format!(
        "{database}/{chain}/{}{MANIFEST_SUFFIX}",
        range_name(first, last)
    )
}

pub fn is_manifest(key: &str) -> bool {
    key.ends_with(MANIFEST_SUFFIX)
}

/// The (database, chain) a key belongs to, from its last three segments.
pub fn key_scope(key: &str) -> Option<(&str, &str)> {
    let mut parts = key.rsplitn(3, '/');
    let _file = parts.next()?;
    let chain = parts.next()?;
    let database = parts.next()?.rsplit('/').next()?;
    Some((database, chain))
}

pub fn parse_hash(text: &str) -> Option<Hash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// One chain: manifests in transaction order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub id: String,
    pub manifests: Vec<Manifest>,
}

impl Chain {
    pub fn last(&self) -> &Manifest {
        self.manifests
            .last()
            .expect("a chain has at least one manifest")
    }

    pub fn started(&self) -> DateTime<Utc> {
        self.manifests[0].created
    }

    /// The chain is one history from transaction 1: no gap, no overlap, each object chaining to
    /// the one before, every manifest naming this database and chain.
    pub fn check(&self, database: &str) -> Result<(), String> {
        let mut expected_first = 1;
        let mut expected_prev = hex(&EMPTY_ALH);
        for m in &self.manifests {
            if m.format != MANIFEST_FORMAT {
                return Err(format!(
                    "{}: manifest format {}, expected {MANIFEST_FORMAT}",
                    m.object, m.format
                ));
            }
            if m.database != database || m.chain != self.id {
                return Err(format!(
                    "{}: the manifest is of database '{}' chain {}, expected database '{database}' chain {}",
                    m.object, m.database, m.chain, self.id
                ));
            }
            if m.first_tx != expected_first {
                return Err(format!(
                    "{}: starts at tx {}, expected tx {expected_first} (a gap or an overlap in chain {})",
                    m.object, m.first_tx, self.id
                ));
            }
            if m.prev_alh != expected_prev {
                return Err(format!(
                    "{}: chains to Alh {}, but tx {} has Alh {expected_prev}",
                    m.object,
                    m.prev_alh,
                    m.first_tx - 1
                ));
            }
            if m.last_tx < m.first_tx || m.records != m.last_tx - m.first_tx + 1 {
                return Err(format!(
                    "{}: manifest range {}..{} does not match {} records",
                    m.object, m.first_tx, m.last_tx, m.records
                ));
            }
            expected_first = m.last_tx + 1;
            expected_prev.clone_from(&m.last_alh);
        }
        Ok(())
    }
}

/// Groups one database's manifests into chains, oldest chain first (chain ids sort by time).
pub fn chains(mut manifests: Vec<Manifest>) -> Vec<Chain> {
    manifests.sort_by(|a, b| (&a.chain, a.first_tx).cmp(&(&b.chain, b.first_tx)));
    let mut out: Vec<Chain> = Vec::new();
    for m in manifests {
        match out.last_mut() {
            Some(chain) if chain.id == m.chain => chain.manifests.push(m),
            _ => out.push(Chain {
                id: m.chain.clone(),
                manifests: vec![m],
            }),
        }
    }
    out
}

/// The chains retention deletes: those beyond the newest `keep_chains` (when set) whose last
/// write is older than `keep_days` (when set). The newest chain is always kept, so the only chain
/// never goes; with neither rule set nothing is deleted.
pub fn expired(
    chains: &[Chain],
    keep_chains: u32,
    keep_days: u32,
    now: DateTime<Utc>,
) -> Vec<&Chain> {
    if keep_chains == 0 && keep_days == 0 {
        return Vec::new();
    }
    let newest_first: Vec<&Chain> = chains.iter().rev().collect();
    newest_first
        .into_iter()
        .enumerate()
        .skip(1)
        .filter(|(rank, chain)| {
            let beyond_count = keep_chains == 0 || *rank >= keep_chains as usize;
            let beyond_age = keep_days == 0
                || now - chain.last().created > chrono::Duration::days(i64::from(keep_days));
            beyond_count && beyond_age
        })
        .map(|(_, chain)| chain)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(
        chain: &str,
        first: u64,
        last: u64,
        prev: Hash,
        last_alh: Hash,
        days_ago: i64,
    ) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            database: "appdb".into(),
            chain: chain.into(),
            object: object_key("appdb", chain, first, last),
            first_tx: first,
            last_tx: last,
            prev_alh: hex(&prev),
            last_alh: hex(&last_alh),
            immudb_version: "1.10.0".into(),
            source: "r".into(),
            created: Utc::now() - chrono::Duration::days(days_ago),
            records: last - first + 1,
            bytes: 1,
            sha256: String::new(),
        }
    }

    #[test]
    fn keys_sort_by_range_and_name_their_scope() {
        let key = object_key("appdb", "20260101T000000Z", 1, 10);
        assert_eq!(
            key,
            "appdb/20260101T000000Z/00000000000000000001-00000000000000000010.immubackup"
        );
        assert_eq!(
            key_scope(&format!("backups/x/{key}")),
            Some(("appdb", "20260101T000000Z"))
        );
        assert!(is_manifest(&manifest_key("a", "c", 1, 2)));
        assert!(object_key("a", "c", 9, 9) < object_key("a", "c", 10, 10));
        assert_eq!(parse_hash(&hex(&[7; 32])), Some([7; 32]));
        assert_eq!(parse_hash("zz"), None);
    }

    #[test]
    fn a_chain_must_be_one_history_from_tx_1() {
        let good = chains(vec![
            manifest("c1", 6, 9, [1; 32], [2; 32], 0),
            manifest("c1", 1, 5, EMPTY_ALH, [1; 32], 1),
        ]);
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].manifests[0].first_tx, 1, "sorted by range");
        good[0].check("appdb").unwrap();
        assert!(good[0]
            .check("otherdb")
            .unwrap_err()
            .contains("expected database 'otherdb'"));

        let gap = chains(vec![
            manifest("c1", 1, 5, EMPTY_ALH, [1; 32], 1),
            manifest("c1", 7, 9, [1; 32], [2; 32], 0),
        ]);
        assert!(gap[0].check("appdb").unwrap_err().contains("expected tx 6"));
        let foreign = chains(vec![
            manifest("c1", 1, 5, EMPTY_ALH, [1; 32], 1),
            manifest("c1", 6, 9, [9; 32], [2; 32], 0),
        ]);
        assert!(foreign[0]
            .check("appdb")
            .unwrap_err()
            .contains("chains to Alh"));
        let no_start = chains(vec![manifest("c1", 2, 5, [3; 32], [1; 32], 1)]);
        assert!(no_start[0].check("appdb").is_err());
    }

    #[test]
    fn retention_keeps_the_newest_chains_and_never_the_only_one() {
        let all: Vec<Chain> = (0..5)
            .map(|i| Chain {
                id: format!("c{i}"),
                manifests: vec![manifest(
                    &format!("c{i}"),
                    1,
                    1,
                    EMPTY_ALH,
                    [1; 32],
                    50 - 10 * i,
                )],
            })
            .collect();
        let ids = |v: Vec<&Chain>| v.into_iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        let now = Utc::now();
        assert_eq!(ids(expired(&all, 2, 0, now)), ["c2", "c1", "c0"]);
        // Age alone: chains last written more than 25 days ago (c0 50, c1 40, c2 30 days).
        assert_eq!(ids(expired(&all, 0, 25, now)), ["c2", "c1", "c0"]);
        // Both: beyond the newest 2 and older than 35 days.
        assert_eq!(ids(expired(&all, 2, 35, now)), ["c1", "c0"]);
        assert!(expired(&all, 0, 0, now).is_empty());
        assert!(
            expired(&all[..1], 1, 1, now).is_empty(),
            "the only chain stays"
        );
        assert!(expired(&all[..1], 0, 1, now + chrono::Duration::days(999)).is_empty());
    }
}

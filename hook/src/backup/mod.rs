//! Backups that prove themselves: `backup` streams databases from an immudb (a replica by
//! default) into immuadmin's hot-backup format in a directory or S3, `restore` replays them into
//! a new database and proves the result, `rebuild-primary` copies the most advanced replica into
//! a new primary. Every transaction goes through `immudb-txlog`'s chain check: its checksum is the
//! Alh of its header and its prevAlh the Alh before it. Three subcommands: they may import the
//! engine (config, client, session, wait, report, `reconcile`'s node span) and the leaf types;
//! only the command tree imports them.

pub mod audit;
pub mod catalog;
pub mod catch_up;
pub mod config;
pub mod destination;
pub mod rebuild;
pub mod replay_target;
pub mod restore;
pub mod run;
pub mod storage;
pub mod walk;

use crate::report::{Failure, Line, Outcome, Report};
use crate::types::Role;
use storage::{Storage, StorageError};

pub use crate::report::{integrity, Failed, StepResult};

pub fn storage_failed(error: StorageError) -> Failed {
    (Failure::Storage, error.to_string())
}

/// Every manifest of `database` in `storage`, grouped into chains (oldest first). A manifest that
/// does not parse, or names another database or chain than its place, fails the whole listing.
pub async fn load_chains(storage: &Storage, database: &str) -> StepResult<Vec<catalog::Chain>> {
    let keys = storage.list(database).await.map_err(storage_failed)?;
    let mut manifests = Vec::new();
    for key in keys.iter().filter(|k| catalog::is_manifest(k)) {
        let bytes = storage.read_all(key).await.map_err(storage_failed)?;
        let manifest: catalog::Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            integrity(format!(
                "{} {key}: not a backup manifest: {e}",
                storage.name
            ))
        })?;
        let scope = catalog::key_scope(key);
        if manifest.database != database || scope != Some((database, manifest.chain.as_str())) {
            return Err(integrity(format!(
                "{} {key}: the manifest is of database '{}' (chain {}), expected database '{database}': a file from another database",
                storage.name, manifest.database, manifest.chain
            )));
        }
        manifests.push(manifest);
    }
    Ok(catalog::chains(manifests))
}

/// One report line per database: what was done, or why not.
pub fn line(role: Role, host: &str, database: &str, result: StepResult<String>) -> Line {
    Line::for_database(role, host, database, result.map(Outcome::Completed))
}

/// The same failure for every database, when nothing could start.
pub fn all_failed(role: Role, host: &str, databases: &[String], failed: Failed) -> Report {
    Report {
        lines: databases
            .iter()
            .map(|db| line(role, host, db, Err(failed.clone())))
            .collect(),
        ..Default::default()
    }
}

//! The verification pass every restore starts with, and all of `restore --verify-only`: the chain
//! of a database is picked, its manifests checked, and every object, record and entry read and
//! proved (SHA-256, the Alh chain, each transaction's entries against its eH), optionally against
//! a state the user knows from elsewhere (`--expect-alh HEX[@TX]`: a replica's CurrentState, an
//! auditor's note). Nothing is written and no server is contacted.

use immudb_txlog::{hex, Hash};
use tracing::Instrument;

use super::catalog;
use super::config::{ExpectedState, RestoreConfig};
use super::storage::Storage;
use super::walk::{walk, Walked};
use super::{integrity, line, load_chains, storage_failed, StepResult};
use crate::report::{Failure, Report};
use crate::types::Role;

/// What the verification pass proved about a chain up to `end`.
pub struct Audit {
    pub end: u64,
    pub walked: Walked,
    /// The Alh of the transaction the caller asked to remember, if the chain holds it.
    pub remembered: Option<Hash>,
}

/// The chain of `from` a restore reads: `--chain`, or the newest.
pub async fn pick_chain(
    config: &RestoreConfig,
    storage: &Storage,
    from: &str,
) -> StepResult<catalog::Chain> {
    let chains = load_chains(storage, from).await?;
    let ids = chains
        .iter()
        .map(|c| c.id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let chain = match &config.chain {
        Some(id) => chains.iter().find(|c| c.id == *id).ok_or_else(|| {
            (
                Failure::Storage,
                format!(
                    "{} holds no chain {id} of database '{from}' (chains: {ids})",
                    storage.name
                ),
            )
        })?,
        None => chains.last().ok_or_else(|| {
            (
                Failure::Storage,
                format!("{} holds no backup of database '{from}'", storage.name),
            )
        })?,
    };
    chain
        .check(from)
        .map_err(|e| integrity(format!("{}: {e}", storage.name)))?;
    Ok(chain.clone())
}

/// The last transaction to restore: `--up-to-tx`, or the chain's last.
pub fn end_of(config: &RestoreConfig, chain: &catalog::Chain, from: &str) -> StepResult<u64> {
    let last = chain.last().last_tx;
    let end = config.up_to_tx.unwrap_or(last);
    if end > last {
        return Err((
            Failure::Storage,
            format!(
                "chain {} of '{from}' holds tx 1..{last}; it cannot restore up to tx {end}",
                chain.id
            ),
        ));
    }
    Ok(end)
}

/// Reads and proves `chain` up to `end`, checks `expect`, and remembers the Alh of transaction
/// `remember` (0: none).
pub async fn audit(
    storage: &Storage,
    chain: &catalog::Chain,
    end: u64,
    expect: Option<ExpectedState>,
    remember: u64,
) -> StepResult<Audit> {
    let mut remembered = None;
    // Where the expected Alh appears, to say so when it is not where it was expected.
    let mut seen_at = None;
    let walked = walk(storage, chain, end, &mut async |record| {
        if record.tx_id == remember {
            remembered = Some(record.checksum);
        }
        if expect.is_some_and(|e| e.alh == record.checksum) {
            seen_at = Some(record.tx_id);
        }
        Ok(())
    })
    .await?;
    if let Some(expected) = expect {
        check_expected(chain, end, &walked, expected, seen_at)?;
    }
    Ok(Audit {
        end,
        walked,
        remembered,
    })
}

fn check_expected(
    chain: &catalog::Chain,
    end: u64,
    walked: &Walked,
    expected: ExpectedState,
    seen_at: Option<u64>,
) -> StepResult<()> {
    let want = hex(&expected.alh);
    let elsewhere = match seen_at {
        Some(tx) => format!("; the chain has that Alh at tx {tx}"),
        None => "; no transaction of the chain has that Alh".to_string(),
    };
    match expected.tx {
        Some(tx) if tx > end => Err(integrity(format!(
            "chain {} ends at tx {end}, before tx {tx} of --expect-alh",
            chain.id
        ))),
        Some(tx) if seen_at == Some(tx) => Ok(()),
        Some(tx) => Err(integrity(format!(
            "chain {} does not pass through Alh {want} at tx {tx}{elsewhere}",
            chain.id
        ))),
        None if walked.end_alh == expected.alh => Ok(()),
        None => Err(integrity(format!(
            "chain {} ends at tx {end} with Alh {}, not the expected {want}{elsewhere}",
            chain.id,
            hex(&walked.end_alh)
        ))),
    }
}

/// `restore --verify-only`: one report line per database, what was proved or why not.
pub async fn verify_only(config: &RestoreConfig) -> Report {
    let mut report = Report::default();
    let storage = match Storage::open(&config.storage, config.timeout) {
        Ok(storage) => storage,
        Err(e) => {
            let failed = storage_failed(e);
            for (from, _) in &config.databases {
                report
                    .lines
                    .push(line(Role::Primary, "", from, Err(failed.clone())));
            }
            return report;
        }
    };
    for (from, _) in &config.databases {
        let span = tracing::info_span!("verify", database = %from);
        let result = verify_database(config, &storage, from)
            .instrument(span)
            .await;
        report
            .lines
            .push(line(Role::Primary, &storage.name, from, result));
    }
    report
}

async fn verify_database(
    config: &RestoreConfig,
    storage: &Storage,
    from: &str,
) -> StepResult<String> {
    let chain = pick_chain(config, storage, from).await?;
    let end = end_of(config, &chain, from)?;
    let audit = audit(storage, &chain, end, config.expect, 0).await?;
    let w = &audit.walked;
    let mut summary = format!(
        "verified chain {} of '{from}': {} object(s), {} records, {} entries hashed to their eH; tx 1..{end} ends with Alh {}",
        chain.id,
        w.objects,
        w.records,
        w.entries,
        hex(&w.end_alh)
    );
    match config.expect {
        Some(ExpectedState { tx: Some(tx), .. }) => {
            summary.push_str(&format!("; passes through the expected Alh at tx {tx}"))
        }
        Some(_) => summary.push_str(" as expected"),
        None => {}
    }
    Ok(summary)
}

//! `restore`: verify a whole chain (SHA-256, every record, the chain) before writing anything,
//! then create the database in the external-replica form, replay every record with replicateTx,
//! switch replica off, and prove that CurrentState equals the backup's last Alh.

use immudb_txlog::{hex, Hash};
use tokio::time::Instant;
use tracing::Instrument;

use super::catalog;
use super::config::RestoreConfig;
use super::storage::Storage;
use super::tx_client::State;
use super::walk::walk;
use super::{all_failed, call, integrity, line, load_chains, storage_failed, StepResult};
use crate::report::{Failure, Report};
use crate::session::Session;
use crate::types::Role;
use crate::wait::node_span;
use crate::wait::{self, ReadyNode, SystemResolver};

pub async fn restore(config: &RestoreConfig) -> Report {
    let primary = &config.topology.primary;
    let names: Vec<String> = config
        .databases
        .iter()
        .map(|(_, into)| into.clone())
        .collect();
    let storage = match Storage::open(&config.storage, config.timeout) {
        Ok(storage) => storage,
        Err(e) => return all_failed(Role::Primary, primary, &names, storage_failed(e)),
    };
    let resolver = SystemResolver::new(&config.topology);
    let deadline = Instant::now() + config.timeout;
    let target = match wait::wait_for(&resolver, &config.topology, primary, deadline)
        .instrument(node_span(Role::Primary, primary))
        .await
    {
        Ok(ready) => ready,
        Err(reason) => {
            return all_failed(Role::Primary, primary, &names, (Failure::NotReady, reason))
        }
    };
    let mut report = Report::default();
    for (from, into) in &config.databases {
        let span = tracing::info_span!("restore", database = %into, from = %from);
        let result = restore_database(config, &storage, &target, from, into)
            .instrument(span)
            .await;
        report
            .lines
            .push(line(Role::Primary, primary, into, result));
    }
    report
}

/// The target database as it is now: absent, or its state and whether it is a replica.
struct Existing {
    state: State,
    replica: bool,
}

async fn observe_target(
    config: &RestoreConfig,
    target: &ReadyNode,
    into: &str,
) -> StepResult<Option<Existing>> {
    let deadline = Instant::now() + config.timeout;
    let admin = Session::open(&target.client, &config.admin, "defaultdb", deadline).await?;
    let listed = call(config.timeout, "DatabaseListV2", || {
        admin.client.list_databases()
    })
    .await;
    admin.close().await;
    let Some(database) = listed?.into_iter().find(|d| d.name == into) else {
        return Ok(None);
    };
    let session = Session::open(&target.client, &config.admin, into, deadline).await?;
    let state = call(config.timeout, "CurrentState", || {
        session.client.current_state()
    })
    .await;
    session.close().await;
    Ok(Some(Existing {
        state: state?,
        replica: database.replication.replica,
    }))
}

fn pick_chain<'a>(
    config: &RestoreConfig,
    storage: &Storage,
    chains: &'a [catalog::Chain],
    from: &str,
) -> StepResult<&'a catalog::Chain> {
    let ids = || {
        chains
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &config.chain {
        Some(id) => chains.iter().find(|c| c.id == *id).ok_or_else(|| {
            (
                Failure::Storage,
                format!(
                    "{} holds no chain {id} of database '{from}' (chains: {})",
                    storage.name,
                    ids()
                ),
            )
        }),
        None => chains.last().ok_or_else(|| {
            (
                Failure::Storage,
                format!("{} holds no backup of database '{from}'", storage.name),
            )
        }),
    }
}

async fn restore_database(
    config: &RestoreConfig,
    storage: &Storage,
    target: &ReadyNode,
    from: &str,
    into: &str,
) -> StepResult<String> {
    let chains = load_chains(storage, from).await?;
    let chain = pick_chain(config, storage, &chains, from)?;
    chain
        .check(from)
        .map_err(|e| integrity(format!("{}: {e}", storage.name)))?;
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

    // Read-only look at the target first, so the verification pass knows which Alh to remember.
    let existing = observe_target(config, target, into).await?;
    let have = existing.as_ref().map_or(0, |e| e.state.tx_id);
    if have > 0 && !config.append {
        return Err((
            Failure::Conflict,
            format!(
                "database '{into}' on {} already holds {have} transactions: restore writes only into a new or empty database (--append continues one whose history the backup extends)",
                config.topology.primary
            ),
        ));
    }
    if have > end {
        return Err((
            Failure::Conflict,
            format!("database '{into}' already holds {have} transactions, more than the backup's tx {end}"),
        ));
    }

    // Verification pass: nothing is written unless the whole chain up to `end` proves itself.
    let mut alh_at_have: Option<Hash> = None;
    let end_alh = walk(storage, chain, end, &mut async |record| {
        if record.tx_id == have {
            alh_at_have = Some(record.checksum);
        }
        Ok(())
    })
    .await?;
    if let (Some(existing), Some(alh)) = (&existing, alh_at_have) {
        if existing.state.alh != alh {
            return Err((
                Failure::Conflict,
                format!(
                    "database '{into}' ends at tx {have} with Alh {}, the backup has Alh {} there: its history is not the backup's",
                    hex(&existing.state.alh),
                    hex(&alh)
                ),
            ));
        }
    }
    tracing::info!(chain = %chain.id, end, end_alh = %hex(&end_alh), "the backup verified; restoring");

    // Write pass.
    let deadline = Instant::now() + config.timeout;
    let admin = Session::open(&target.client, &config.admin, "defaultdb", deadline).await?;
    let prepared = match &existing {
        None => {
            call(config.timeout, "CreateDatabaseV2", || {
                admin.client.create_replica_target(into)
            })
            .await
        }
        Some(e) if !e.replica => {
            call(config.timeout, "UpdateDatabaseV2", || {
                admin.client.set_replica(into, true)
            })
            .await
        }
        Some(_) => Ok(()),
    };
    let replayed = match prepared {
        Ok(()) => replay(config, storage, chain, target, into, have, end).await,
        Err(failed) => Err(failed),
    };
    // Replica mode is switched off only after every record is in: a restore that stopped halfway
    // leaves a read-only database that `--append` continues.
    let promoted = match replayed {
        Ok(()) => call(config.timeout, "UpdateDatabaseV2", || admin.client.set_replica(into, false)).await,
        Err((failure, reason)) => Err((
            failure,
            format!("{reason}; '{into}' stays read-only (replica mode): rerun with --append to continue"),
        )),
    };
    admin.close().await;
    promoted?;

    let session = Session::open(&target.client, &config.admin, into, deadline).await?;
    let state = call(config.timeout, "CurrentState", || {
        session.client.current_state()
    })
    .await;
    session.close().await;
    let state = state?;
    if state.tx_id != end || state.alh != end_alh {
        return Err(integrity(format!(
            "after the restore '{into}' reports tx {} with Alh {}, the backup tx {end} with Alh {}",
            state.tx_id,
            hex(&state.alh),
            hex(&end_alh)
        )));
    }
    Ok(format!(
        "restored tx {}..{end} from chain {} of '{from}'; CurrentState txId {end} txHash {} matches the backup",
        have + 1,
        chain.id,
        hex(&end_alh)
    ))
}

async fn replay(
    config: &RestoreConfig,
    storage: &Storage,
    chain: &catalog::Chain,
    target: &ReadyNode,
    into: &str,
    have: u64,
    end: u64,
) -> StepResult<()> {
    let session = Session::open(
        &target.client,
        &config.admin,
        into,
        Instant::now() + config.timeout,
    )
    .await?;
    let client = &session.client;
    let replayed = walk(storage, chain, end, &mut async |record| {
        if record.tx_id <= have {
            return Ok(());
        }
        let header = call(config.timeout, "replicateTx", || {
            client.replicate_tx(&record.content)
        })
        .await?;
        if header.id != record.tx_id || header.alh() != record.checksum {
            return Err(integrity(format!(
                "tx {}: the server committed tx {} with Alh {}, the record's is {}",
                record.tx_id,
                header.id,
                hex(&header.alh()),
                hex(&record.checksum)
            )));
        }
        Ok(())
    })
    .await;
    session.close().await;
    replayed.map(|_| ())
}

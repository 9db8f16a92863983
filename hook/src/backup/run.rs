//! `backup`: for each database, continue the newest chain at the destination (or start one) with
//! every transaction the source committed since, read ahead concurrently (one exportTx each) and
//! written in order, each record checked against the chain (its entries against eH included), the
//! last one against CurrentState; then write the manifest and apply retention. Each Alh covers the
//! one before it, so the last one equal to CurrentState's proves every header; a TxById per
//! transaction (as immuadmin reads) would double the reads and prove nothing more.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::select_ok;
use immudb_txlog::{hex, Chain, ExportedTx, Record};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::Instrument;

use super::catalog::{self, Manifest, MANIFEST_FORMAT};
use super::catch_up::{primary_targets, wait_caught_up};
use super::config::{BackupConfig, Source};
use super::storage::{ObjectWriter, Storage};
use super::{all_failed, integrity, line, load_chains, storage_failed, StepResult};
use crate::client::transactions::State;
use crate::report::{Failure, Report};
use crate::session::{Bound, Session};
use crate::transfer::ReadAhead;
use crate::types::Role;
use crate::wait::node_span;
use crate::wait::{self, ReadyNode, SystemResolver};

/// How long `--source replica` waits for a replica before backing up from the primary.
const REPLICA_WAIT: Duration = Duration::from_secs(30);
const PROGRESS_EVERY: u64 = 10_000;

/// The node to read from: the first ready replica not in `passed_over`, the primary when no
/// replica is ready and none was passed over. With `--agent-port`, a replica is ready only when
/// its agent says so: immudb's /readyz answers while replication is broken, and a diverged
/// former primary must never extend a chain.
async fn choose_source(
    config: &BackupConfig,
    passed_over: &[String],
) -> StepResult<(Role, String, ReadyNode)> {
    let topology = &config.topology;
    let resolver = SystemResolver::new(topology);
    let ready = |host: String, budget: Duration| {
        let (resolver, topology) = (resolver.clone(), topology.clone());
        async move {
            let deadline = Instant::now() + budget;
            let node = wait::wait_for(&resolver, &topology, &host, deadline).await?;
            if let Some(port) = topology.agent_port.filter(|_| host != topology.primary) {
                wait::until_agent_ready(&node, port, deadline).await?;
            }
            Ok::<_, String>((host, node))
        }
    };
    let primary = || async {
        let (host, node) = ready(topology.primary.clone(), config.timeout)
            .instrument(node_span(Role::Primary, &topology.primary))
            .await
            .map_err(|e| (Failure::NotReady, e))?;
        Ok((Role::Primary, host, node))
    };
    match &config.source {
        Source::Primary => primary().await,
        Source::Host(host) => {
            let (host, node) = ready(host.clone(), config.timeout)
                .await
                .map_err(|e| (Failure::NotReady, e))?;
            let role = if host == topology.primary {
                Role::Primary
            } else {
                Role::Replica
            };
            Ok((role, host, node))
        }
        Source::Replica if topology.replicas.is_empty() => primary().await,
        Source::Replica => {
            let budget = config.timeout.min(REPLICA_WAIT);
            let waits: Vec<_> = topology
                .replicas
                .iter()
                .filter(|host| !passed_over.contains(host))
                .map(|host| {
                    Box::pin(ready(host.clone(), budget).instrument(node_span(Role::Replica, host)))
                })
                .collect();
            if waits.is_empty() {
                return Err((Failure::NotReplicated, "no other replica".into()));
            }
            match select_ok(waits).await {
                Ok(((host, node), _)) => Ok((Role::Replica, host, node)),
                Err(last) if !passed_over.is_empty() => Err((Failure::NotReplicated, last)),
                Err(last) => {
                    tracing::warn!(last_error = %last, "no replica is ready; backing up from the primary");
                    primary().await
                }
            }
        }
    }
}

pub async fn backup(config: &BackupConfig) -> Report {
    let storage = match Storage::open(&config.storage, config.timeout) {
        Ok(storage) => storage,
        Err(e) => {
            return all_failed(
                Role::Primary,
                &config.topology.primary,
                &config.databases,
                storage_failed(e),
            )
        }
    };
    let (role, host, source) = match caught_up_source(config).await {
        Ok(chosen) => chosen,
        Err(failed) => {
            return all_failed(
                Role::Primary,
                &config.topology.primary,
                &config.databases,
                failed,
            )
        }
    };
    tracing::info!(%role, host, destination = %storage.name, "backing up");
    let mut report = Report::default();
    for database in &config.databases {
        let span = tracing::info_span!("backup", database = %database, host = %host);
        let result = backup_database(config, &storage, &source, &host, database)
            .instrument(span)
            .await;
        report.lines.push(line(role, &host, database, result));
    }
    report
}

/// The source, and when it is a replica, one that holds what the primary had committed when the
/// run started (`catch_up`): a replica that does not get there within `--catch-up-timeout` is
/// passed over for the next one its agent calls Ready; with none left the run fails naming each
/// one's lag (exit 6), rather than back up less than the primary committed.
async fn caught_up_source(config: &BackupConfig) -> StepResult<(Role, String, ReadyNode)> {
    let targets = match config.source {
        Source::Primary => None,
        _ => primary_targets(config).await,
    };
    // The replicas passed over, and why.
    let (mut passed_over, mut lags): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    loop {
        let chosen = choose_source(config, &passed_over).await;
        let (role, host, node) = match chosen {
            Err((Failure::NotReplicated, why)) if !lags.is_empty() => {
                return Err((
                    Failure::NotReplicated,
                    format!("{}; {why}", lags.join("; ")),
                ))
            }
            Err(failed) => return Err(failed),
            Ok(chosen) => chosen,
        };
        let Some(targets) = targets.as_ref().filter(|_| role == Role::Replica) else {
            return Ok((role, host, node));
        };
        let waited = wait_caught_up(config, &host, &node, targets)
            .instrument(node_span(role, &host))
            .await;
        match waited {
            Ok(()) => return Ok((role, host, node)),
            Err(lag) if config.source == Source::Replica => {
                tracing::warn!(%lag, "passing the replica over");
                passed_over.push(host);
                lags.push(lag);
            }
            Err(lag) => return Err((Failure::NotReplicated, lag)),
        }
    }
}

/// Where this run starts: a new chain, or after the newest chain's last record.
struct Start {
    chain_id: String,
    chain: Chain,
    /// The chains already at the destination, for retention.
    existing: Vec<catalog::Chain>,
}

async fn plan_start(config: &BackupConfig, storage: &Storage, database: &str) -> StepResult<Start> {
    let existing = load_chains(storage, database).await?;
    let now = Utc::now();
    let max_age = chrono::Duration::days(i64::from(config.new_chain_after_days));
    let continuing = existing.last().filter(|c| {
        !config.full && (config.new_chain_after_days == 0 || now - c.started() <= max_age)
    });
    let (chain_id, chain) = match continuing {
        Some(newest) => {
            newest
                .check(database)
                .map_err(|e| integrity(format!("{}: {e}", storage.name)))?;
            let last = newest.last();
            let alh = catalog::parse_hash(&last.last_alh).ok_or_else(|| {
                integrity(format!(
                    "{}: manifest of {} has no valid last Alh",
                    storage.name, last.object
                ))
            })?;
            (newest.id.clone(), Chain::after(last.last_tx, alh))
        }
        None => {
            // Two chains started in the same second get distinct ids that still sort by time.
            let base = catalog::chain_id(now);
            let mut id = base.clone();
            for n in 2.. {
                if !existing.iter().any(|c| c.id == id) {
                    break;
                }
                id = format!("{base}-{n}");
            }
            (id, Chain::genesis())
        }
    };
    Ok(Start {
        chain_id,
        chain,
        existing,
    })
}

async fn backup_database(
    config: &BackupConfig,
    storage: &Storage,
    source: &ReadyNode,
    host: &str,
    database: &str,
) -> StepResult<String> {
    let start = plan_start(config, storage, database).await?;
    let bound = Bound::EachCall(config.timeout);
    let session = Arc::new(Session::open(&source.client, &config.admin, database, bound).await?);
    let result = transfer(config, storage, &session, source, host, database, start).await;
    session.close().await;
    let (mut summary, chains) = result?;
    let deleted = apply_retention(config, storage, database, &chains).await?;
    if !deleted.is_empty() {
        summary.push_str(&format!(
            "; retention deleted chain(s) {}",
            deleted.join(", ")
        ));
    }
    Ok(summary)
}

/// Streams what the source has beyond the chain; returns what it did and the chains now at the
/// destination.
async fn transfer(
    config: &BackupConfig,
    storage: &Storage,
    session: &Arc<Session>,
    source: &ReadyNode,
    host: &str,
    database: &str,
    start: Start,
) -> StepResult<(String, Vec<catalog::Chain>)> {
    let state = session
        .call("CurrentState", |c| async move { c.current_state().await })
        .await?;
    let Start {
        chain_id,
        mut chain,
        existing,
    } = start;
    let first = chain.last_id + 1;
    if chain.last_id > 0 {
        if state.tx_id < chain.last_id {
            tracing::warn!(
                source_tx = state.tx_id,
                backed_up_tx = chain.last_id,
                "the source is behind the backup"
            );
            let summary = format!(
                "nothing written: {host} holds tx 1..{} but chain {chain_id} already holds tx 1..{} (the source lags)",
                state.tx_id, chain.last_id
            );
            return Ok((summary, existing));
        }
        // The destination must hold this source's history before anything is appended to it.
        let last = chain.last_id;
        let header = session
            .call("TxById", |c| async move { c.tx_header(last).await })
            .await?;
        if header.alh() != chain.last_alh {
            return Err(integrity(format!(
                "{}: chain {chain_id} ends at tx {} with Alh {}, but {host} has Alh {} there: the destination holds another database's history",
                storage.name,
                chain.last_id,
                hex(&chain.last_alh),
                hex(&header.alh())
            )));
        }
    }
    if state.tx_id < first {
        let summary = format!("up to date at tx {}, nothing written", state.tx_id);
        return Ok((summary, existing));
    }
    let prev_alh = chain.last_alh;
    let key = catalog::object_key(database, &chain_id, first, state.tx_id);
    tracing::info!(
        first,
        last = state.tx_id,
        key,
        read_ahead = config.read_ahead,
        "streaming"
    );
    let started = std::time::Instant::now();
    let mut writer = storage.writer(&key).await.map_err(storage_failed)?;
    let streamed = stream_records(
        session,
        &mut chain,
        (first, state),
        &mut writer,
        config.read_ahead,
    )
    .await;
    let (bytes, sha256) = match streamed {
        Ok(done) => done,
        Err(failed) => {
            writer.abort().await;
            return Err(failed);
        }
    };
    writer.finish().await.map_err(storage_failed)?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        database: database.to_string(),
        chain: chain_id.clone(),
        object: key.clone(),
        first_tx: first,
        last_tx: state.tx_id,
        prev_alh: hex(&prev_alh),
        last_alh: hex(&state.alh),
        immudb_version: source.version.clone(),
        source: host.to_string(),
        created: Utc::now(),
        records: state.tx_id - first + 1,
        bytes,
        sha256,
    };
    let manifest_key = catalog::manifest_key(database, &chain_id, first, state.tx_id);
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    storage
        .put(&manifest_key, manifest_json)
        .await
        .map_err(storage_failed)?;
    tracing::info!(
        records = manifest.records,
        bytes,
        seconds = started.elapsed().as_secs_f64(),
        last_alh = %manifest.last_alh,
        "backed up"
    );
    let mut chains = existing;
    match chains.iter_mut().find(|c| c.id == chain_id) {
        Some(chain) => chain.manifests.push(manifest.clone()),
        None => chains.push(catalog::Chain {
            id: chain_id.clone(),
            manifests: vec![manifest.clone()],
        }),
    }
    let summary = format!(
        "backed up tx {first}..{} ({} records, {bytes} bytes) into {key}; last Alh {}",
        state.tx_id, manifest.records, manifest.last_alh
    );
    Ok((summary, chains))
}

/// Streams transactions `first..=state.tx_id` into `writer`, `read_ahead` of them read
/// concurrently and each checked in order (the chain, the entries against eH)
/// before it is written; returns (bytes, SHA-256 hex). Memory holds at most `read_ahead`
/// transactions (each twice: as read and decoded) besides the storage's upload parts.
async fn stream_records(
    session: &Arc<Session>,
    chain: &mut Chain,
    (first, state): (u64, State),
    writer: &mut ObjectWriter,
    read_ahead: usize,
) -> StepResult<(u64, String)> {
    let mut reads = ReadAhead::new(first, state.tx_id, read_ahead, |id| {
        let session = session.clone();
        async move {
            session
                .call("exportTx", |c| async move { c.export_tx(id).await })
                .await
        }
    });
    let mut sha = Sha256::new();
    let mut bytes = 0u64;
    while let Some(read) = reads.next().await {
        let (id, message) = read?;
        let tx = ExportedTx::from_message(&message).map_err(|e| {
            integrity(format!(
                "tx {id}: exportTx sent a malformed transaction: {e}"
            ))
        })?;
        let alh = chain.append(&tx).map_err(|e| integrity(e.to_string()))?;
        let record = Record {
            tx_id: id,
            checksum: alh,
            content: message,
        }
        .to_bytes();
        sha.update(&record);
        bytes += record.len() as u64;
        writer.write(&record).await.map_err(storage_failed)?;
        if (id - first + 1).is_multiple_of(PROGRESS_EVERY) {
            tracing::info!(tx = id, last = state.tx_id, bytes, "progress");
        }
    }
    if chain.last_alh != state.alh {
        return Err(integrity(format!(
            "tx {}: the last record's Alh {} is not CurrentState's txHash {}",
            state.tx_id,
            hex(&chain.last_alh),
            hex(&state.alh)
        )));
    }
    Ok((bytes, hex(&sha.finalize())))
}

/// Deletes the chains retention lets go: manifests first (the chain stops being restorable at
/// once), then every other object of the chain.
async fn apply_retention(
    config: &BackupConfig,
    storage: &Storage,
    database: &str,
    chains: &[catalog::Chain],
) -> StepResult<Vec<String>> {
    let retention = config.retention;
    let expired = catalog::expired(
        chains,
        retention.keep_chains,
        retention.keep_days,
        Utc::now(),
    );
    let mut deleted = Vec::new();
    for chain in expired {
        let mut keys = storage
            .list(&format!("{database}/{}", chain.id))
            .await
            .map_err(storage_failed)?;
        keys.sort_by_key(|k| !catalog::is_manifest(k));
        for key in &keys {
            storage.delete(key).await.map_err(storage_failed)?;
        }
        tracing::info!(chain = %chain.id, objects = keys.len(), "retention deleted a chain");
        deleted.push(chain.id.clone());
    }
    Ok(deleted)
}

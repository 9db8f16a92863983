//! `rebuild-primary`: a lost primary comes back on an empty volume; for each database, the most
//! advanced replica (by committed transactions) streams every transaction with exportTx straight
//! into the new primary with replicateTx, each one chain-checked on the way, with no intermediate
//! storage. The database is created in the external-replica form, switched to a writable primary
//! at the end, and CurrentState must then be the replica's exactly.

use futures::future::join_all;
use immudb_txlog::{hex, Chain, ExportedTx};
use tokio::time::Instant;
use tracing::Instrument;

use super::config::RebuildConfig;
use super::tx_client::State;
use super::{all_failed, call, integrity, line, StepResult};
use crate::report::{Failure, Report};
use crate::session::Session;
use crate::types::Role;
use crate::wait::ReadyNode;
use crate::wait::{joined, node_span, spawn_waits};

pub async fn rebuild_primary(config: &RebuildConfig) -> Report {
    let topology = &config.topology;
    let deadline = Instant::now() + config.timeout;
    let (primary_wait, replica_waits) = spawn_waits(topology, deadline);
    let primary = match joined(primary_wait).await {
        Ok(ready) => ready,
        Err(reason) => {
            return all_failed(
                Role::Primary,
                &topology.primary,
                &config.databases,
                (Failure::NotReady, reason),
            )
        }
    };
    let replicas: Vec<(String, ReadyNode)> =
        join_all(replica_waits.into_iter().map(|(host, waiting)| async move {
            match joined(waiting).await {
                Ok(ready) => Some((host, ready)),
                Err(reason) => {
                    tracing::warn!(host, %reason, "replica not ready; not a source");
                    None
                }
            }
        }))
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut report = Report::default();
    for database in &config.databases {
        let span = tracing::info_span!("rebuild", database = %database);
        let result = rebuild_database(config, &primary, &replicas, database)
            .instrument(span)
            .await;
        report
            .lines
            .push(line(Role::Primary, &topology.primary, database, result));
    }
    report
}

/// The replica holding the most transactions of `database`, with a session on it.
async fn most_advanced(
    config: &RebuildConfig,
    replicas: &[(String, ReadyNode)],
    database: &str,
) -> StepResult<(String, Session, State)> {
    let mut best: Option<(String, Session, State)> = None;
    for (host, ready) in replicas {
        let span = node_span(Role::Replica, host);
        let observed = async {
            let session = Session::open(
                &ready.client,
                &config.admin,
                database,
                Instant::now() + config.timeout,
            )
            .await?;
            match call(config.timeout, "CurrentState", || {
                session.client.current_state()
            })
            .await
            {
                Ok(state) => Ok((session, state)),
                Err(failed) => {
                    session.close().await;
                    Err(failed)
                }
            }
        }
        .instrument(span)
        .await;
        let (session, state) = match observed {
            Ok(found) => found,
            Err((_, reason)) => {
                tracing::warn!(host, %reason, "replica skipped");
                continue;
            }
        };
        tracing::info!(host, tx = state.tx_id, "replica state");
        match &best {
            Some((_, _, top)) if top.tx_id >= state.tx_id => session.close().await,
            _ => {
                if let Some((_, previous, _)) = best.take() {
                    previous.close().await;
                }
                best = Some((host.clone(), session, state));
            }
        }
    }
    best.ok_or_else(|| {
        (
            Failure::Rejected,
            format!("no ready replica holds database '{database}'"),
        )
    })
}

async fn rebuild_database(
    config: &RebuildConfig,
    primary: &ReadyNode,
    replicas: &[(String, ReadyNode)],
    database: &str,
) -> StepResult<String> {
    let timeout = config.timeout;
    let deadline = Instant::now() + timeout;
    let admin = Session::open(&primary.client, &config.admin, "defaultdb", deadline).await?;
    let result = async {
        let listed = call(timeout, "DatabaseListV2", || admin.client.list_databases()).await?;
        let existing = listed.into_iter().find(|d| d.name == database);
        if let Some(existing) = &existing {
            if existing.tx_count > 0 {
                return Err((
                    Failure::Conflict,
                    format!(
                        "database '{database}' on the primary {} already holds {} transactions: rebuild-primary fills only a missing or empty database",
                        config.topology.primary, existing.tx_count
                    ),
                ));
            }
        }
        let (source, replica, state) = most_advanced(config, replicas, database).await?;
        let copied = async {
            match &existing {
                None => call(timeout, "CreateDatabaseV2", || admin.client.create_replica_target(database)).await?,
                Some(e) if !e.replication.replica => {
                    call(timeout, "UpdateDatabaseV2", || admin.client.set_replica(database, true)).await?
                }
                Some(_) => {}
            }
            copy(config, primary, &replica, database, state, &source).await?;
            call(timeout, "UpdateDatabaseV2", || admin.client.set_replica(database, false)).await
        }
        .await;
        replica.close().await;
        copied?;
        let session = Session::open(&primary.client, &config.admin, database, deadline).await?;
        let rebuilt = call(timeout, "CurrentState", || session.client.current_state()).await;
        session.close().await;
        let rebuilt = rebuilt?;
        if rebuilt != state {
            return Err(integrity(format!(
                "the rebuilt primary reports tx {} Alh {}, the replica {source} tx {} Alh {}",
                rebuilt.tx_id,
                hex(&rebuilt.alh),
                state.tx_id,
                hex(&state.alh)
            )));
        }
        Ok(format!(
            "rebuilt from {source}: tx 1..{}, CurrentState txId {} txHash {} on both",
            state.tx_id,
            state.tx_id,
            hex(&state.alh)
        ))
    }
    .await;
    admin.close().await;
    result
}

/// Streams 1..=state.tx_id from the replica into the primary, one chain-checked transaction at
/// a time.
async fn copy(
    config: &RebuildConfig,
    primary: &ReadyNode,
    replica: &Session,
    database: &str,
    state: State,
    source: &str,
) -> StepResult<()> {
    let timeout = config.timeout;
    let target = Session::open(
        &primary.client,
        &config.admin,
        database,
        Instant::now() + timeout,
    )
    .await?;
    let result = async {
        let mut chain = Chain::genesis();
        for id in 1..=state.tx_id {
            let message = call(timeout, "exportTx", || replica.client.export_tx(id)).await?;
            let tx = ExportedTx::from_message(&message).map_err(|e| {
                integrity(format!(
                    "tx {id} from {source}: a malformed transaction: {e}"
                ))
            })?;
            let alh = chain
                .append(&tx)
                .map_err(|e| integrity(format!("{source}: {e}")))?;
            let header = call(timeout, "replicateTx", || {
                target.client.replicate_tx(&message)
            })
            .await?;
            if header.alh() != alh {
                return Err(integrity(format!(
                    "tx {id}: the primary committed Alh {}, the replica's is {}",
                    hex(&header.alh()),
                    hex(&alh)
                )));
            }
        }
        if chain.last_alh != state.alh {
            return Err(integrity(format!(
                "{source}: tx {} has Alh {}, but CurrentState said {}",
                state.tx_id,
                hex(&chain.last_alh),
                hex(&state.alh)
            )));
        }
        Ok(())
    }
    .await;
    target.close().await;
    result
}

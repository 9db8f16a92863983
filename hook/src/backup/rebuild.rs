//! `rebuild-primary`: a lost primary comes back on an empty volume; for each database, the most
//! advanced replica (by committed transactions) streams every transaction with exportTx (read
//! ahead) straight into the new primary with replicateTx (pipelined, no deeper than its
//! maxConcurrency), each one chain-checked on the way, entries included, with no intermediate
//! storage. The database is created in the external-replica form, switched to a writable primary
//! at the end, and CurrentState must then be the replica's exactly.

use std::sync::Arc;

use futures::future::join_all;
use immudb_txlog::{hex, Chain};
use tokio::time::Instant;
use tracing::Instrument;

use super::config::RebuildConfig;
use super::replay_target;
use super::{all_failed, integrity, line, StepResult};
use crate::client::transactions::State;
use crate::report::{Failure, Report};
use crate::session::{Bound, Session};
use crate::transfer::{self, Depth};
use crate::types::{Role, Setting};
use crate::wait::{self, joined, node_span, spawn_waits, ReadyNode};

pub async fn rebuild_primary(config: &RebuildConfig) -> Report {
    let topology = &config.topology;
    let deadline = Instant::now() + config.timeout;
    let (primary_wait, replica_waits) = spawn_waits(topology, deadline, deadline);
    let primary = match joined(primary_wait).await {
        Ok(ready) => ready,
        Err(reason) => {
            return all_failed(
                Role::Primary,
                &topology.primary,
                &config.databases,
                (Failure::NotReady, reason.to_string()),
            )
        }
    };
    // A source must be a replica its agent calls Ready (when agents run): a diverged former
    // primary may hold the most transactions, of another history.
    let agents = match topology.agent_port {
        Some(port) => match wait::agent_http() {
            Ok(http) => Some((http, port)),
            Err(reason) => {
                return all_failed(
                    Role::Primary,
                    &topology.primary,
                    &config.databases,
                    (Failure::NotReady, reason),
                )
            }
        },
        None => None,
    };
    let agents = &agents;
    let replicas: Vec<(String, ReadyNode)> =
        join_all(replica_waits.into_iter().map(|(host, waiting)| async move {
            let checked = async {
                let ready = joined(waiting).await?;
                if let Some((http, port)) = agents {
                    wait::agent_ready(http, &ready, *port)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(ready)
            };
            match checked.await {
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

/// The replica holding the most transactions of `database`, and its state.
async fn most_advanced<'a>(
    config: &RebuildConfig,
    replicas: &'a [(String, ReadyNode)],
    database: &str,
) -> StepResult<(&'a (String, ReadyNode), State)> {
    let mut best: Option<(&(String, ReadyNode), State)> = None;
    for replica in replicas {
        let host = &replica.0;
        let observed = async {
            let bound = Bound::EachCall(config.timeout);
            let session = Session::open(&replica.1.client, &config.admin, database, bound).await?;
            let state = session
                .call("CurrentState", |c| async move { c.current_state().await })
                .await;
            session.close().await;
            state
        }
        .instrument(node_span(Role::Replica, host))
        .await;
        let state = match observed {
            Ok(state) => state,
            Err((_, reason)) => {
                tracing::warn!(host, %reason, "replica skipped");
                continue;
            }
        };
        tracing::info!(host, tx = state.tx_id, "replica state");
        if best.as_ref().is_none_or(|(_, top)| state.tx_id > top.tx_id) {
            best = Some((replica, state));
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
    let bound = Bound::EachCall(config.timeout);
    // Kept across the copy, which may run for hours; reopened if the server loses it.
    let admin = Session::open(&primary.client, &config.admin, "defaultdb", bound).await?;
    let list = || {
        admin.call(
            "DatabaseListV2",
            |c| async move { c.list_databases().await },
        )
    };
    let result = async {
        let listed = list().await?;
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
        let ((source, replica), state) = most_advanced(config, replicas, database).await?;
        let before = existing.as_ref().map(|e| &e.replication);
        replay_target::prepare(&admin, database, before).await?;
        let max_concurrency = list()
            .await?
            .into_iter()
            .find(|d| d.name == database)
            .and_then(|d| d.storage.get(Setting::MaxConcurrency));
        let depth = max_concurrency.map_or(config.pipeline_depth, |m| config.pipeline_depth.min(m as usize)).max(1);
        copy(config, primary, replica, database, state, source, depth).await?;
        replay_target::finish(&admin, database, before).await?;
        let session = Session::open(&primary.client, &config.admin, database, bound).await?;
        let rebuilt = session
            .call("CurrentState", |c| async move { c.current_state().await })
            .await;
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
            "rebuilt from {source}: tx 1..{}, CurrentState txId {} txHash {} on both ({depth} replicateTx in flight)",
            state.tx_id,
            state.tx_id,
            hex(&state.alh)
        ))
    }
    .await;
    admin.close().await;
    result
}

/// Streams 1..=state.tx_id from the replica into the primary (`transfer::copy`); the copy must
/// end at the replica's state.
async fn copy(
    config: &RebuildConfig,
    primary: &ReadyNode,
    replica: &ReadyNode,
    database: &str,
    state: State,
    source: &str,
    depth: usize,
) -> StepResult<()> {
    let bound = Bound::EachCall(config.timeout);
    let reader = Arc::new(Session::open(&replica.client, &config.admin, database, bound).await?);
    let writer = Arc::new(Session::open(&primary.client, &config.admin, database, bound).await?);
    let depth = Depth {
        read_ahead: config.read_ahead,
        replicate: depth,
    };
    let copied = transfer::copy(
        &reader,
        &writer,
        Chain::genesis(),
        state.tx_id,
        depth,
        source,
    )
    .await;
    reader.close().await;
    writer.close().await;
    let chain = copied?;
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

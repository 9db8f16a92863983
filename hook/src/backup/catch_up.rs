//! A backup from a replica holds what the primary had committed when the run started: an
//! asynchronous replica may be minutes behind after a quiet period (immudb's replicator sleeps up
//! to 2 minutes; its agent wakes it), and a backup that read it then would call itself "up to
//! date" while missing the latest writes. So the run reads the primary's CurrentState of every
//! database first, then waits (`--catch-up-timeout`, progress logged) until the chosen replica
//! holds at least that; one that does not is given up for another (`run::backup`).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::config::BackupConfig;
use crate::client::RpcError;
use crate::retry::Retried;
use crate::session::{Bound, Session};
use crate::types::Role;
use crate::wait::{self, node_span, ReadyNode, SystemResolver};

/// How often the replica is asked what it holds while the run waits.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// How often the wait is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Each database's last committed transaction on the primary (CurrentState), over one admin
/// session; None, logged, when the primary does not answer within the catch-up timeout (the
/// backup then reads what the replica holds, which a primary outage makes the best there is).
pub async fn primary_targets(config: &BackupConfig) -> Option<BTreeMap<String, u64>> {
    let topology = &config.topology;
    let read = async {
        let deadline = Instant::now() + config.timeout.min(config.catch_up_timeout);
        let resolver = SystemResolver::new(topology);
        let node = wait::wait_for(&resolver, topology, &topology.primary, deadline).await?;
        let first = &config.databases[0];
        let session = Session::open(&node.client, &config.admin, first, Bound::Until(deadline))
            .await
            .map_err(|(_, e)| e)?;
        let read = committed_on_primary(&session, &config.databases).await;
        session.close().await;
        read.map_err(|e| e.to_string())
    };
    match read
        .instrument(node_span(Role::Primary, &topology.primary))
        .await
    {
        Ok(targets) => {
            tracing::info!(
                ?targets,
                "the primary's committed transactions at the start"
            );
            Some(targets)
        }
        Err(error) => {
            tracing::warn!(%error, "the primary did not answer: backing up what the replica holds, which may lack the primary's latest transactions");
            None
        }
    }
}

async fn committed_on_primary(
    session: &Session,
    databases: &[String],
) -> Result<BTreeMap<String, u64>, Retried<RpcError>> {
    let mut targets = BTreeMap::new();
    for database in databases {
        let state = session
            .retry(|c| async move {
                c.use_database(database).await?;
                c.current_state().await
            })
            .await?;
        targets.insert(database.clone(), state.tx_id);
    }
    Ok(targets)
}

/// Waits until `node` (`host`) holds `targets`; the lag, in words, when it does not in time.
pub async fn wait_caught_up(
    config: &BackupConfig,
    host: &str,
    node: &ReadyNode,
    targets: &BTreeMap<String, u64>,
) -> Result<(), String> {
    let started = Instant::now();
    let deadline = started + config.catch_up_timeout;
    // The catch-up deadline bounds the waiting; each look is bounded on its own.
    let bound = Bound::EachCall(config.timeout);
    let session = Session::open(&node.client, &config.admin, &config.databases[0], bound)
        .await
        .map_err(|(_, e)| format!("{host}: {e}"))?;
    let mut logged = started;
    let outcome = loop {
        let listed = session
            .retry(|c| async move { c.list_databases().await })
            .await;
        let held = match listed {
            Ok(databases) => databases
                .into_iter()
                .map(|d| (d.name, d.tx_count))
                .collect(),
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "could not read what the replica holds; asking again");
                BTreeMap::new()
            }
            Err(error) => break Err(format!("{host}: {error}")),
        };
        let behind = behind(targets, &held);
        if behind.is_empty() {
            if Instant::now() > started + LOOK_EVERY {
                let seconds = started.elapsed().as_secs_f64();
                tracing::info!(seconds, "the replica holds what the primary had committed");
            }
            break Ok(());
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "{host} still lacks what the primary had committed when the backup started after {} s: {}",
                config.catch_up_timeout.as_secs(),
                behind.join(", ")
            ));
        }
        if logged.elapsed() >= PROGRESS_EVERY || logged == started {
            tracing::info!(behind = %behind.join(", "), "waiting for the replica to hold what the primary had committed");
            logged = Instant::now();
        }
        tokio::time::sleep(LOOK_EVERY.min(deadline.saturating_duration_since(Instant::now())))
            .await;
    };
    session.close().await;
    outcome
}

/// "appdb holds tx 120 of 300" for each database the replica holds less of than `targets`.
fn behind(targets: &BTreeMap<String, u64>, held: &BTreeMap<String, u64>) -> Vec<String> {
    targets
        .iter()
        .filter_map(|(database, &target)| {
            let have = held.get(database).copied().unwrap_or(0);
            (have < target).then(|| format!("{database} holds tx {have} of {target}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_is_behind_until_it_holds_the_primary_s_transaction() {
        let targets = BTreeMap::from([("appdb".to_string(), 300), ("audit".to_string(), 0)]);
        let held = BTreeMap::from([("appdb".to_string(), 120)]);
        assert_eq!(behind(&targets, &held), ["appdb holds tx 120 of 300"]);
        let held = BTreeMap::from([("appdb".to_string(), 301)]);
        assert!(behind(&targets, &held).is_empty());
    }
}

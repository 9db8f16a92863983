//! A look between two polls, pure: the agent's watch tick reads what the replica and its primary
//! hold (one DatabaseListV2 here, each database's CurrentState there) and this updates, for the
//! databases the last poll found replicating, their lag, whether they keep up, and which
//! replicators to wake. Every other state waits for the next poll, which observes everything.

use std::collections::BTreeMap;
use std::time::Duration;

use super::health::{is_replicating, replicating_state, Assessment, Limits, Memory};
use super::progress;
use super::{Action, Observed};

/// What one tick read.
pub struct Look<'a> {
    /// The replica's databases (DatabaseListV2).
    pub local: &'a Observed,
    /// The primary's last committed transaction per database.
    pub primary: &'a BTreeMap<String, u64>,
    /// Whether the agent may change the databases (not in systemdb mode).
    pub manage: bool,
}

/// Updates `assessment` with `look` at `now`; returns the replicators to wake.
pub fn look(
    assessment: &mut Assessment,
    look: &Look<'_>,
    memory: &mut Memory,
    now: Duration,
    limits: &Limits,
) -> Vec<Action> {
    let mut wakes = Vec::new();
    for health in assessment
        .databases
        .iter_mut()
        .filter(|d| is_replicating(d.state))
    {
        let name = health.name.as_str();
        let (Some(db), Some(&primary_tx)) = (look.local.database(name), look.primary.get(name))
        else {
            continue;
        };
        // A primary behind its replica, or a database unloaded meanwhile, is the poll's case.
        if !db.loaded || primary_tx < db.tx_count {
            continue;
        }
        let progress = memory.progress(name);
        progress.lag.observe_primary(now, primary_tx);
        let Some(lag) = progress.lag.lag(now, db.tx_count) else {
            continue;
        };
        let driver = progress::driver(db.replication.sync_replication, look.manage);
        let judged = progress.judge(now, &lag, db.tx_count, driver, &limits.progress);
        if judged.wake {
            wakes.push(Action::WakeReplicator {
                name: name.to_string(),
            });
        }
        (health.state, health.ready) = replicating_state(judged.motion);
        health.lag = Some(lag);
    }
    assessment.refresh_ready();
    wakes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::health::tests::LIMITS;
    use crate::plan::health::{DatabaseHealth, State};
    use crate::plan::{ObservedDatabase, ReplicationSettings, StorageSettings};

    fn health(name: &str, state: State) -> DatabaseHealth {
        DatabaseHealth {
            name: name.into(),
            state,
            replicating: is_replicating(state),
            ready: state == State::Replicating,
            lag: None,
            detail: None,
            settings_unconfirmed: false,
        }
    }

    fn replica(name: &str, tx_count: u64, sync_replication: bool) -> ObservedDatabase {
        ObservedDatabase {
            name: name.into(),
            replication: ReplicationSettings {
                replica: true,
                sync_replication,
                ..Default::default()
            },
            storage: StorageSettings::default(),
            loaded: true,
            tx_count,
        }
    }

    /// Ticks at `times` with the primary at `primary` and the replica at `held` for appdb
    /// (async) and audit (sync), and canary stopped; the wakes of each tick.
    fn ticks(
        assessment: &mut Assessment,
        memory: &mut Memory,
        times: impl IntoIterator<Item = u64>,
        primary: u64,
        held: u64,
    ) -> Vec<Vec<Action>> {
        let local = Observed {
            databases: vec![
                replica("appdb", held, false),
                replica("audit", held, true),
                replica("canary", held, false),
            ],
            users: vec![],
        };
        let primary: BTreeMap<String, u64> = ["appdb", "audit", "canary"]
            .iter()
            .map(|db| (db.to_string(), primary))
            .collect();
        let look_at = Look {
            local: &local,
            primary: &primary,
            manage: true,
        };
        times
            .into_iter()
            .map(|t| {
                look(
                    assessment,
                    &look_at,
                    memory,
                    Duration::from_secs(t),
                    &LIMITS,
                )
            })
            .collect()
    }

    #[test]
    fn a_tick_wakes_an_idle_async_replica_and_calls_one_that_does_not_move_stalled() {
        let mut assessment = Assessment {
            databases: vec![
                health("appdb", State::Replicating),
                health("audit", State::Replicating),
                health("canary", State::ReplicatorStopped),
            ],
            ready: false,
            ..Default::default()
        };
        let mut memory = Memory::default();
        ticks(&mut assessment, &mut memory, [0, 60], 4, 4);
        assert!(assessment.databases[..2].iter().all(|d| d.ready));
        // A write after a quiet minute: only the async replicating database is woken.
        let woken = ticks(&mut assessment, &mut memory, [61], 5, 4);
        assert_eq!(
            woken,
            [vec![Action::WakeReplicator {
                name: "appdb".into()
            }]]
        );
        assert_eq!(assessment.databases[0].lag.unwrap().transactions, 1);
        assert_eq!(assessment.databases[2].state, State::ReplicatorStopped);
        // The wake did not move it: stalled (not Ready) past the bound, woken again after 10 s.
        let woken = ticks(&mut assessment, &mut memory, 62..=72, 5, 4);
        let states: Vec<State> = assessment.databases.iter().map(|d| d.state).collect();
        assert_eq!(
            states,
            [State::Stalled, State::Stalled, State::ReplicatorStopped]
        );
        assert!(!assessment.ready);
        assert_eq!(woken.iter().flatten().count(), 1, "{woken:?}");
        // It catches up: Ready again at the next tick.
        ticks(&mut assessment, &mut memory, [73], 5, 5);
        assert!(assessment.databases[..2].iter().all(|d| d.ready));
    }
}

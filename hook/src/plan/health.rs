//! The agent's decisions, pure: from what one poll observed (and what earlier polls remember),
//! each database's state, whether the pod is Ready, and the repairs to make. Repairs never lose
//! data: missing databases are created, drifted settings updated once the drift outlasts a grace
//! period (longer than the kubelet takes to refresh the agent's mounted spec, so the agent never
//! undoes a change a newer release just made), a stopped replicator restarted by unload + load
//! with backoff, and only when the primary runs the same immudb version. Whether a replicating
//! database keeps up, and when its replicator is woken, is `progress`'s decision.

use std::collections::BTreeMap;
use std::time::Duration;

use super::lag::Lag;
use super::progress::{self, Bounds, Progress};
pub use super::state::{is_replicating, replicating_state, Repair, State};
use super::{
    plan_database, plan_primary, Action, Conflict, DesiredDatabase, Observed, PrimaryDesired,
    ReplicaDesired,
};

#[derive(Clone, Debug)]
pub struct Limits {
    /// Lag, stall and wake bounds of a replicating database.
    pub progress: Bounds,
    /// How long settings may differ before the agent updates them.
    pub drift_grace: Duration,
    /// First and longest wait between replicator restarts of one database.
    pub restart_backoff: (Duration, Duration),
}

/// The primary as seen from a replica's agent in one poll.
#[derive(Clone, Debug)]
pub struct PrimaryView {
    pub version: String,
    /// Each replicated database's last committed transaction; absent when the primary lacks it.
    pub transactions: BTreeMap<String, u64>,
}

/// What a replica's agent observed in one poll.
pub struct ReplicaView<'a> {
    /// Whether the agent may change the databases: not in systemdb mode, where immudb replicates
    /// the reserved defaultdb itself and refuses every change to it.
    pub manage: bool,
    pub observed: &'a Observed,
    /// `immudb_replication_replicators` per database from the local metrics port.
    pub replicators: &'a BTreeMap<String, u64>,
    pub local_version: &'a str,
    /// None when the primary did not answer.
    pub primary: Option<&'a PrimaryView>,
    /// Databases failover keeps as they are, with their state and why: fenced or diverged ones
    /// are neither repaired nor Ready.
    pub held_back: &'a BTreeMap<String, (State, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseHealth {
    pub name: String,
    pub state: State,
    /// The replicator runs against a reachable primary of the same version (whether or not it
    /// keeps up).
    pub replicating: bool,
    pub ready: bool,
    pub lag: Option<Lag>,
    /// Settings differ (and since when), or a conflict the agent will not resolve.
    pub detail: Option<String>,
    /// immudb accepted the agent's settings update and still reports other values: the update is
    /// not sent again (the detail names it) until the spec or what immudb reports changes.
    pub settings_unconfirmed: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Assessment {
    pub databases: Vec<DatabaseHealth>,
    pub repairs: Vec<(Action, Repair)>,
    /// Replicators to wake ([`Action::WakeReplicator`]); not repairs, nothing is changed.
    pub wakes: Vec<Action>,
    /// Every database is ready.
    pub ready: bool,
}

impl Assessment {
    fn of(databases: Vec<DatabaseHealth>, repairs: Vec<(Action, Repair)>) -> Assessment {
        let ready = databases.iter().all(|d| d.ready);
        Assessment {
            databases,
            repairs,
            wakes: Vec::new(),
            ready,
        }
    }

    /// Readiness again after a database's health changed.
    pub fn refresh_ready(&mut self) {
        self.ready = self.databases.iter().all(|d| d.ready);
    }
}

/// What the agent remembers between polls, per database.
#[derive(Clone, Debug, Default)]
struct DatabaseMemory {
    progress: Progress,
    drift_since: Option<Duration>,
    next_restart: Duration,
    restart_delay: Duration,
    /// The settings update the agent last applied to this database, and whether it was planned
    /// again after that: immudb accepted it but reports other values back.
    applied_update: Option<Action>,
    unconfirmed: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Memory {
    databases: BTreeMap<String, DatabaseMemory>,
}

impl Memory {
    /// The progress of `database`, for a look between polls.
    pub fn progress(&mut self, database: &str) -> &mut Progress {
        &mut self
            .databases
            .entry(database.to_string())
            .or_default()
            .progress
    }

    /// The agent applied `update` and immudb accepted it. Should a later poll plan the very same
    /// update, immudb does not report what it accepted: the agent says so once instead of sending
    /// it again every grace period.
    pub fn update_applied(&mut self, update: &Action) {
        if let Action::UpdateDatabase { name, .. } = update {
            let remembered = self.databases.entry(name.clone()).or_default();
            remembered.applied_update = Some(update.clone());
        }
    }
}

impl DatabaseMemory {
    /// Drifted settings are updated only after they have differed for the grace period, and an
    /// update immudb accepted without reporting it back is not sent again.
    fn update_after_grace(
        &mut self,
        update: Option<Action>,
        now: Duration,
        grace: Duration,
    ) -> (Option<Action>, Option<String>) {
        let Some(update) = update else {
            self.drift_since = None;
            self.applied_update = None;
            self.unconfirmed = false;
            return (None, None);
        };
        if self.applied_update.as_ref() == Some(&update) {
            self.unconfirmed = true;
            return (
                None,
                Some(format!(
                    "immudb accepted {} but reports other values; not sent again until the spec or immudb's values change",
                    update.describe_settings()
                )),
            );
        }
        self.applied_update = None;
        self.unconfirmed = false;
        let since = *self.drift_since.get_or_insert(now);
        if now.saturating_sub(since) >= grace {
            self.drift_since = None;
            return (Some(update), Some("settings differed; updated".into()));
        }
        let waited = now.saturating_sub(since).as_secs();
        (
            None,
            Some(format!(
                "settings differ from the spec for {waited} s; updated after {} s",
                grace.as_secs()
            )),
        )
    }

    /// A stopped replicator is restarted at once, then with doubling waits.
    fn restart_due(&mut self, now: Duration, (first, longest): (Duration, Duration)) -> bool {
        if now < self.next_restart {
            return false;
        }
        self.restart_delay = (self.restart_delay * 2).clamp(first, longest);
        self.next_restart = now + self.restart_delay;
        true
    }
}

fn conflict_health(name: &str, conflict: &Conflict) -> DatabaseHealth {
    DatabaseHealth {
        name: name.to_string(),
        state: match conflict {
            Conflict::NotAReplica(_) => State::NotAReplica,
            _ => State::Conflict,
        },
        replicating: false,
        ready: false,
        lag: None,
        detail: Some(conflict.to_string()),
        settings_unconfirmed: false,
    }
}

/// One replica database, given what this poll observed.
#[allow(clippy::too_many_arguments)]
fn assess_replica_database(
    desired: &ReplicaDesired,
    wanted: &DesiredDatabase,
    view: &ReplicaView<'_>,
    memory: &mut DatabaseMemory,
    now: Duration,
    limits: &Limits,
    repairs: &mut Vec<(Action, Repair)>,
    wakes: &mut Vec<Action>,
) -> DatabaseHealth {
    let name = wanted.name.as_str();
    if let Some((state, detail)) = view.held_back.get(name) {
        return DatabaseHealth {
            name: name.to_string(),
            state: *state,
            replicating: false,
            ready: false,
            lag: None,
            detail: Some(detail.clone()),
            settings_unconfirmed: false,
        };
    }
    let primary_tx = view.primary.and_then(|p| p.transactions.get(name).copied());
    if let Some(tx) = primary_tx {
        memory.progress.lag.observe_primary(now, tx);
    }
    let replication = desired.replication(name);
    let found = view.observed.database(name);
    let planned = match found {
        Some(db) if !db.replication.replica => Err(Conflict::NotAReplica(name.to_string())),
        _ => plan_database(wanted, replication.clone(), found, |have| {
            *have == replication
        }),
    };
    let health = |state, replicating, ready, lag, detail, settings_unconfirmed| DatabaseHealth {
        name: name.to_string(),
        state,
        replicating,
        ready,
        lag,
        detail,
        settings_unconfirmed,
    };
    let planned = match planned {
        Err(conflict) => return conflict_health(name, &conflict),
        Ok(planned) => planned,
    };
    let Some(db) = found else {
        repairs.extend(planned.map(|create| (create, Repair::Created)));
        return health(State::Missing, false, false, None, None, false);
    };
    if !db.loaded {
        if view.manage {
            let load = Action::LoadDatabase {
                name: name.to_string(),
            };
            repairs.push((load, Repair::Loaded));
        }
        return health(State::NotLoaded, false, false, None, None, false);
    }
    let (update, detail) = memory.update_after_grace(planned, now, limits.drift_grace);
    repairs.extend(update.map(|update| (update, Repair::Settings)));
    let lag = primary_tx.and_then(|_| memory.progress.lag.lag(now, db.tx_count));
    let running = view.replicators.get(name).is_some_and(|n| *n > 0);
    let state = match (view.primary, primary_tx) {
        (None, _) => State::PrimaryUnreachable,
        (Some(p), _) if p.version != view.local_version => State::VersionMismatch,
        (Some(_), None) => State::MissingOnPrimary,
        (Some(_), Some(tx)) if db.tx_count > tx => State::PrimaryBehind,
        _ if !running => {
            if view.manage && memory.restart_due(now, limits.restart_backoff) {
                let reload = Action::ReloadDatabase {
                    name: name.to_string(),
                };
                repairs.push((reload, Repair::ReplicatorRestarted));
            }
            State::ReplicatorStopped
        }
        _ => {
            memory.restart_delay = Duration::ZERO;
            // The primary's transaction was just sampled, so there is a lag.
            let driver = progress::driver(db.replication.sync_replication, view.manage);
            let judged = lag.as_ref().map(|lag| {
                memory
                    .progress
                    .judge(now, lag, db.tx_count, driver, &limits.progress)
            });
            if judged.is_some_and(|j| j.wake) {
                wakes.push(Action::WakeReplicator {
                    name: name.to_string(),
                });
            }
            judged.map_or(State::Replicating, |j| replicating_state(j.motion).0)
        }
    };
    // Without a primary to compare with, stale reads beat no reads: a replica that has caught
    // up since the agent started stays Ready.
    let ready = match state {
        State::PrimaryUnreachable | State::PrimaryBehind | State::MissingOnPrimary => {
            memory.progress.lag.caught_up_once()
        }
        _ => state == State::Replicating,
    };
    health(
        state,
        is_replicating(state),
        ready,
        lag,
        detail,
        memory.unconfirmed,
    )
}

/// A replica pod: every replicated database.
pub fn assess_replica(
    desired: &ReplicaDesired,
    view: &ReplicaView<'_>,
    memory: &mut Memory,
    now: Duration,
    limits: &Limits,
) -> Assessment {
    let (mut repairs, mut wakes) = (Vec::new(), Vec::new());
    let databases: Vec<DatabaseHealth> = desired
        .databases
        .iter()
        .map(|wanted| {
            let remembered = memory.databases.entry(wanted.name.clone()).or_default();
            assess_replica_database(
                desired,
                wanted,
                view,
                remembered,
                now,
                limits,
                &mut repairs,
                &mut wakes,
            )
        })
        .collect();
    // A repair of the same database restarts its replicator anyway, or replaces it.
    wakes.retain(|wake| repairs.iter().all(|(r, _)| r.database() != wake.database()));
    Assessment {
        wakes,
        ..Assessment::of(databases, repairs)
    }
}

/// The primary pod: its databases, their sync settings and the replication user. `held` names,
/// for each database a replica still holds transactions of, that replica and its count: such a
/// database missing on the primary was lost, and creating it empty would hide that.
pub fn assess_primary(
    desired: &PrimaryDesired,
    observed: &Observed,
    held: &BTreeMap<String, (String, u64)>,
    memory: &mut Memory,
    now: Duration,
    limits: &Limits,
) -> Assessment {
    let actions = match plan_primary(desired, observed) {
        Ok(actions) => actions,
        Err(conflict) => {
            let databases = desired
                .databases
                .iter()
                .map(|db| conflict_health(&db.name, &conflict))
                .collect();
            return Assessment {
                databases,
                ..Default::default()
            };
        }
    };
    let mut repairs = Vec::new();
    let mut details = BTreeMap::new();
    for action in actions {
        let name = action.database().to_string();
        // Nothing is made for a lost database, its replication user's grant included.
        let lost = held.contains_key(&name) && observed.database(&name).is_none();
        match &action {
            _ if lost => {}
            Action::CreateDatabase { .. } => repairs.push((action, Repair::Created)),
            Action::UpdateDatabase { .. } => {
                let remembered = memory.databases.entry(name.clone()).or_default();
                let (update, detail) =
                    remembered.update_after_grace(Some(action), now, limits.drift_grace);
                repairs.extend(update.map(|update| (update, Repair::Settings)));
                details.insert(name, detail);
            }
            _ => repairs.push((action, Repair::User)),
        }
    }
    let databases: Vec<DatabaseHealth> = desired
        .databases
        .iter()
        .map(|wanted| {
            let name = wanted.name.as_str();
            let remembered = memory.databases.entry(name.to_string()).or_default();
            let settings_detail = match details.remove(name) {
                Some(detail) => detail,
                // Nothing to update: any drift is over.
                None => remembered.update_after_grace(None, now, limits.drift_grace).1,
            };
            let (state, detail) = match (observed.database(name), held.get(name)) {
                (None, Some((replica, tx))) => (
                    State::LostOnPrimary,
                    Some(format!("missing here while {replica} holds {tx} transactions; rebuild the primary from it (docs/disaster-recovery.md)")),
                ),
                (None, None) => (State::Missing, None),
                (Some(db), _) if !db.loaded => {
                    let load = Action::LoadDatabase {
                        name: name.to_string(),
                    };
                    repairs.push((load, Repair::Loaded));
                    (State::NotLoaded, None)
                }
                (Some(_), _) => (State::Serving, settings_detail),
            };
            DatabaseHealth {
                name: name.to_string(),
                state,
                replicating: false,
                ready: state == State::Serving,
                lag: None,
                detail,
                settings_unconfirmed: remembered.unconfirmed,
            }
        })
        .collect();
    Assessment::of(databases, repairs)
}

#[cfg(test)]
#[path = "health_tests.rs"]
pub(super) mod tests;

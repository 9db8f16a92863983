//! The pure part of the hook: what a node should look like, what it looks like, and the actions
//! that close the gap (`health` decides the agent's state and repairs, `lag` measures replicas,
//! `failover` follows the Lease, `cutoff` cuts the old primary off before a failover,
//! `switchover` hands the Lease over before a planned stop, `replay` prepares a restore's or a
//! rebuild's target).
//! No I/O here, so every rule is unit-tested. It may import only the leaf `types`; the engine
//! and the subcommands import it, never the other way round.

pub mod cutoff;
pub mod failover;
pub mod health;
pub mod lag;
pub mod progress;
pub mod replay;
pub mod state;
pub mod switchover;
pub mod watch;

use std::collections::BTreeMap;

use crate::types::settings::FixedSettingDiffers;
pub use crate::types::{
    DesiredDatabase, PrimaryDesired, ReplicaDesired, ReplicaOptions, ReplicationSettings, Setting,
    StorageSettings,
};

pub const PERMISSION_ADMIN: u32 = 254;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedDatabase {
    pub name: String,
    pub replication: ReplicationSettings,
    /// Every storage setting as immudb stores it (in effect only after the next load).
    pub storage: StorageSettings,
    pub loaded: bool,
    pub tx_count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedUser {
    pub name: String,
    pub active: bool,
    pub permissions: BTreeMap<String, u32>,
}

/// What the hook read from one node before acting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub databases: Vec<ObservedDatabase>,
    pub users: Vec<ObservedUser>,
}

impl Observed {
    pub fn database(&self, name: &str) -> Option<&ObservedDatabase> {
        self.databases.iter().find(|d| d.name == name)
    }

    fn user(&self, name: &str) -> Option<&ObservedUser> {
        self.users.iter().find(|u| u.name == name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    CreateDatabase {
        name: String,
        replication: ReplicationSettings,
        storage: StorageSettings,
    },
    /// Sends only what differs: replication settings (immudb restarts the replicator when they
    /// come) and the changed storage settings (in effect after the next load).
    UpdateDatabase {
        name: String,
        replication: Option<ReplicationSettings>,
        storage: StorageSettings,
    },
    /// UnloadDatabase then LoadDatabase: applies stored settings and restarts the replicator.
    ReloadDatabase { name: String },
    /// LoadDatabase of an unloaded database.
    LoadDatabase { name: String },
    /// UpdateDatabaseV2 with empty replication settings: nothing stored changes, but immudb stops
    /// the replicator and starts it again, which ends its retry sleep (`progress`).
    WakeReplicator { name: String },
    /// The password comes from the desired state when the action is applied.
    CreateUser {
        user: String,
        database: String,
        permission: u32,
    },
    GrantPermission {
        user: String,
        database: String,
        permission: u32,
    },
}

impl Action {
    /// What an update sends, for a log line (never the replication password).
    pub fn describe_settings(&self) -> String {
        match self {
            Action::UpdateDatabase {
                replication,
                storage,
                ..
            } => {
                let mut parts = Vec::new();
                if replication.is_some() {
                    parts.push("the replication settings".to_string());
                }
                if !storage.is_empty() {
                    parts.push(storage.to_string());
                }
                parts.join(" and ")
            }
            _ => String::new(),
        }
    }

    /// The database an action is about, for the per-database summary.
    pub fn database(&self) -> &str {
        match self {
            Action::CreateDatabase { name, .. }
            | Action::UpdateDatabase { name, .. }
            | Action::ReloadDatabase { name }
            | Action::LoadDatabase { name }
            | Action::WakeReplicator { name } => name,
            Action::CreateUser { database, .. } | Action::GrantPermission { database, .. } => {
                database
            }
        }
    }

    /// True for an update that stored new storage settings, which immudb applies only on load.
    pub fn stores_settings_for_next_load(&self) -> bool {
        matches!(self, Action::UpdateDatabase { storage, .. } if !storage.is_empty())
    }
}

/// States the hook refuses to change: fixing them could lose data or hide a mistake.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("database '{0}' exists on this replica but is not a replica; the hook never overwrites data (promote or rename it by hand)")]
    NotAReplica(String),
    #[error("database '{0}' is a replica that follows no primary (failover fenced a former primary's database); its agent compares its history with the primary's before it follows, and never overwrites a diverged one")]
    Fenced(String),
    #[error("database '{0}' on the primary is a replica; the primary must own its databases")]
    PrimaryDatabaseIsReplica(String),
    #[error("user '{0}' exists but is inactive; reactivate it (SetActiveUser) or choose another replication user")]
    InactiveUser(String),
    #[error("database '{database}': {differs}; nothing was changed on this node")]
    FixedSetting {
        database: String,
        differs: FixedSettingDiffers,
    },
    #[error("database '{database}' is missing on the primary while replica {replica} holds {transactions} transactions of it: the primary lost it; rebuild the primary from that replica (docs/disaster-recovery.md) instead of creating it empty")]
    LostOnPrimary {
        database: String,
        replica: String,
        transactions: u64,
    },
    #[error("defaultdb is not replicating from '{expected}' (replica={replica}, primary host '{actual}'); check the replica's IMMUDB_REPLICATION_* env")]
    NotASystemdbReplica {
        expected: String,
        replica: bool,
        actual: String,
    },
    #[error("defaultdb on the primary is a replica; systemdb mode needs a writable primary")]
    PrimaryIsAReplica,
}

/// One database on one node: create it, update what differs, or nothing. `replication_holds`
/// says whether the observed replication settings are the wanted ones.
fn plan_database(
    desired: &DesiredDatabase,
    replication: ReplicationSettings,
    observed: Option<&ObservedDatabase>,
    replication_holds: impl Fn(&ReplicationSettings) -> bool,
) -> Result<Option<Action>, Conflict> {
    let name = desired.name.clone();
    let Some(db) = observed else {
        return Ok(Some(Action::CreateDatabase {
            name,
            replication,
            storage: desired.storage.clone(),
        }));
    };
    if let Some(differs) = desired
        .storage
        .fixed_differences(&db.storage)
        .into_iter()
        .next()
    {
        return Err(Conflict::FixedSetting {
            database: name,
            differs,
        });
    }
    let storage = desired.storage.changes_from(&db.storage);
    let replication = (!replication_holds(&db.replication)).then_some(replication);
    if replication.is_none() && storage.is_empty() {
        return Ok(None);
    }
    Ok(Some(Action::UpdateDatabase {
        name,
        replication,
        storage,
    }))
}

/// Plans every database first, so a conflict on any of them leaves the node untouched.
fn plan_databases(
    databases: &[DesiredDatabase],
    observed: &Observed,
    plan_one: impl Fn(&DesiredDatabase, Option<&ObservedDatabase>) -> Result<Option<Action>, Conflict>,
) -> Result<Vec<Action>, Conflict> {
    let mut actions = Vec::new();
    for desired in databases {
        actions.extend(plan_one(desired, observed.database(&desired.name))?);
    }
    Ok(actions)
}

/// Databases first (permissions need them), then the replication user.
pub fn plan_primary(
    desired: &PrimaryDesired,
    observed: &Observed,
) -> Result<Vec<Action>, Conflict> {
    let replication = desired.replication();
    let mut actions = plan_databases(&desired.databases, observed, |db, found| {
        if found.is_some_and(|found| found.replication.replica) {
            return Err(Conflict::PrimaryDatabaseIsReplica(db.name.clone()));
        }
        plan_database(db, replication.clone(), found, |have| {
            have.sync_replication == replication.sync_replication
                && have.sync_acks == replication.sync_acks
        })
    })?;
    let user = &desired.replication_user;
    let granted = |db: &&DesiredDatabase| {
        observed
            .user(user)
            .and_then(|u| u.permissions.get(&db.name))
            .is_some_and(|p| *p == PERMISSION_ADMIN)
    };
    let mut missing = desired.databases.iter().filter(|db| !granted(db));
    match observed.user(user) {
        Some(u) if !u.active => return Err(Conflict::InactiveUser(user.clone())),
        Some(_) => {}
        None => {
            if let Some(first) = missing.next() {
                actions.push(Action::CreateUser {
                    user: user.clone(),
                    database: first.name.clone(),
                    permission: PERMISSION_ADMIN,
                });
            }
        }
    }
    actions.extend(missing.map(|db| Action::GrantPermission {
        user: user.clone(),
        database: db.name.clone(),
        permission: PERMISSION_ADMIN,
    }));
    Ok(actions)
}

/// The databases a primary plan would create: the only time replicas are asked what they hold.
pub fn creates_databases(desired: &PrimaryDesired, observed: &Observed) -> Vec<String> {
    desired
        .databases
        .iter()
        .filter(|db| observed.database(&db.name).is_none())
        .map(|db| db.name.clone())
        .collect()
}

/// [`plan_primary`], refusing to create a database that a replica still holds (see `held`).
pub fn plan_primary_guarded(
    desired: &PrimaryDesired,
    observed: &Observed,
    held: &BTreeMap<String, (String, u64)>,
) -> Result<Vec<Action>, Conflict> {
    let actions = plan_primary(desired, observed)?;
    for action in &actions {
        if let Action::CreateDatabase { name, .. } = action {
            if let Some((replica, transactions)) = held.get(name) {
                return Err(Conflict::LostOnPrimary {
                    database: name.clone(),
                    replica: replica.clone(),
                    transactions: *transactions,
                });
            }
        }
    }
    Ok(actions)
}

pub fn plan_replica(
    desired: &ReplicaDesired,
    observed: &Observed,
) -> Result<Vec<Action>, Conflict> {
    plan_databases(&desired.databases, observed, |db, found| {
        if found.is_some_and(|found| !found.replication.replica) {
            return Err(Conflict::NotAReplica(db.name.clone()));
        }
        if found.is_some_and(|found| found.replication.follows_nobody()) {
            return Err(Conflict::Fenced(db.name.clone()));
        }
        let replication = desired.replication(&db.name);
        plan_database(db, replication.clone(), found, |have| *have == replication)
    })
}

/// After applying: each replica database must be loaded and point at the primary's database.
pub fn replica_problems(desired: &ReplicaDesired, observed: &Observed) -> Vec<(String, String)> {
    desired
        .databases
        .iter()
        .filter_map(|wanted| {
            let name = &wanted.name;
            let problem = match observed.database(name) {
                None => "missing after create".to_string(),
                Some(db) if !db.loaded => "not loaded".to_string(),
                Some(db) if db.replication != desired.replication(name) => format!(
                    "settings differ after update (replica={}, primary {}:{} database '{}')",
                    db.replication.replica,
                    db.replication.primary_host,
                    db.replication.primary_port,
                    db.replication.primary_database
                ),
                Some(_) => return None,
            };
            Some((name.clone(), problem))
        })
        .collect()
}

/// `applySettings: immediately`: the databases whose stored settings changed are reloaded one
/// node at a time, every replica before the primary, so readers always find a loaded replica
/// while a node reloads and the primary, which writers need, goes last.
pub fn reload_order<'a>(
    primary: (&'a str, &'a [Action]),
    replicas: &'a [(String, Vec<Action>)],
) -> Vec<(&'a str, Vec<String>)> {
    let reloads = |actions: &[Action]| -> Vec<String> {
        actions
            .iter()
            .filter(|a| a.stores_settings_for_next_load())
            .map(|a| a.database().to_string())
            .collect()
    };
    replicas
        .iter()
        .map(|(host, actions)| (host.as_str(), reloads(actions)))
        .chain(std::iter::once((primary.0, reloads(primary.1))))
        .filter(|(_, databases)| !databases.is_empty())
        .collect()
}

/// systemdb mode: the replica's defaultdb must replicate from the primary.
pub fn check_systemdb_replica(expected_host: &str, observed: &Observed) -> Result<(), Conflict> {
    let settings = observed
        .database("defaultdb")
        .map(|d| d.replication.clone())
        .unwrap_or_default();
    if settings.replica && settings.primary_host == expected_host {
        return Ok(());
    }
    Err(Conflict::NotASystemdbReplica {
        expected: expected_host.to_string(),
        replica: settings.replica,
        actual: settings.primary_host,
    })
}

pub fn check_systemdb_primary(observed: &Observed) -> Result<(), Conflict> {
    match observed.database("defaultdb") {
        Some(db) if db.replication.replica => Err(Conflict::PrimaryIsAReplica),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;

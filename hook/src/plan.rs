//! The pure part of the hook: what a node should look like, what it looks like, and the actions
//! that close the gap. No I/O here, so every rule is unit-tested.

use std::collections::BTreeMap;

use crate::config::Secret;

pub const PERMISSION_ADMIN: u32 = 254;

/// A database's replication settings with every field resolved, as immudb reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationSettings {
    pub replica: bool,
    pub primary_database: String,
    pub primary_host: String,
    pub primary_port: u32,
    pub primary_username: String,
    pub primary_password: Secret,
    pub sync_replication: bool,
    pub sync_acks: u32,
    pub prefetch_tx_buffer_size: u32,
    pub replication_commit_concurrency: u32,
    pub allow_tx_discarding: bool,
    pub skip_integrity_check: bool,
    pub wait_for_indexing: bool,
}

/// The replica-side options every replica database gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaOptions {
    pub sync_replication: bool,
    pub prefetch_tx_buffer_size: u32,
    pub replication_commit_concurrency: u32,
    pub allow_tx_discarding: bool,
    pub skip_integrity_check: bool,
    pub wait_for_indexing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedDatabase {
    pub name: String,
    pub settings: ReplicationSettings,
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

/// The primary's side: its databases (with the primary's sync settings) and the replication user.
#[derive(Clone, Debug)]
pub struct PrimaryDesired {
    pub databases: Vec<String>,
    pub sync_acks: Option<u32>,
    pub replication_user: String,
}

impl PrimaryDesired {
    fn settings(&self) -> ReplicationSettings {
        ReplicationSettings {
            sync_replication: self.sync_acks.is_some(),
            sync_acks: self.sync_acks.unwrap_or(0),
            ..Default::default()
        }
    }
}

/// One replica's side: every database as a replica of the same database on the primary.
#[derive(Clone, Debug)]
pub struct ReplicaDesired {
    pub databases: Vec<String>,
    pub primary_host: String,
    pub primary_port: u32,
    pub replication_user: String,
    pub replication_password: Secret,
    pub options: ReplicaOptions,
}

impl ReplicaDesired {
    pub fn settings(&self, database: &str) -> ReplicationSettings {
        ReplicationSettings {
            replica: true,
            primary_database: database.to_string(),
            primary_host: self.primary_host.clone(),
            primary_port: self.primary_port,
            primary_username: self.replication_user.clone(),
            primary_password: self.replication_password.clone(),
            sync_replication: self.options.sync_replication,
            sync_acks: 0,
            prefetch_tx_buffer_size: self.options.prefetch_tx_buffer_size,
            replication_commit_concurrency: self.options.replication_commit_concurrency,
            allow_tx_discarding: self.options.allow_tx_discarding,
            skip_integrity_check: self.options.skip_integrity_check,
            wait_for_indexing: self.options.wait_for_indexing,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    CreateDatabase {
        name: String,
        settings: ReplicationSettings,
    },
    UpdateDatabase {
        name: String,
        settings: ReplicationSettings,
    },
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
    /// The database an action is about, for the per-database summary.
    pub fn database(&self) -> &str {
        match self {
            Action::CreateDatabase { name, .. } | Action::UpdateDatabase { name, .. } => name,
            Action::CreateUser { database, .. } | Action::GrantPermission { database, .. } => {
                database
            }
        }
    }
}

/// States the hook refuses to change: fixing them could lose data or hide a mistake.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("database '{0}' exists on this replica but is not a replica; the hook never overwrites data (promote or rename it by hand)")]
    NotAReplica(String),
    #[error("database '{0}' on the primary is a replica; the primary must own its databases")]
    PrimaryDatabaseIsReplica(String),
    #[error("user '{0}' exists but is inactive; reactivate it (SetActiveUser) or choose another replication user")]
    InactiveUser(String),
    #[error("defaultdb is not replicating from '{expected}' (replica={replica}, primary host '{actual}'); check the replica's IMMUDB_REPLICATION_* env")]
    NotASystemdbReplica {
        expected: String,
        replica: bool,
        actual: String,
    },
    #[error("defaultdb on the primary is a replica; systemdb mode needs a writable primary")]
    PrimaryIsAReplica,
}

/// Databases first (permissions need them), then the replication user.
pub fn plan_primary(
    desired: &PrimaryDesired,
    observed: &Observed,
) -> Result<Vec<Action>, Conflict> {
    let settings = desired.settings();
    let mut actions = Vec::new();
    for name in &desired.databases {
        match observed.database(name) {
            None => actions.push(Action::CreateDatabase {
                name: name.clone(),
                settings: settings.clone(),
            }),
            Some(db) if db.settings.replica => {
                return Err(Conflict::PrimaryDatabaseIsReplica(name.clone()))
            }
            Some(db)
                if db.settings.sync_replication != settings.sync_replication
                    || db.settings.sync_acks != settings.sync_acks =>
            {
                actions.push(Action::UpdateDatabase {
                    name: name.clone(),
                    settings: settings.clone(),
                })
            }
            Some(_) => {}
        }
    }
    let user = &desired.replication_user;
    let granted = |db: &String| {
        observed
            .user(user)
            .and_then(|u| u.permissions.get(db))
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
                    database: first.clone(),
                    permission: PERMISSION_ADMIN,
                });
            }
        }
    }
    actions.extend(missing.map(|db| Action::GrantPermission {
        user: user.clone(),
        database: db.clone(),
        permission: PERMISSION_ADMIN,
    }));
    Ok(actions)
}

pub fn plan_replica(
    desired: &ReplicaDesired,
    observed: &Observed,
) -> Result<Vec<Action>, Conflict> {
    let mut actions = Vec::new();
    for name in &desired.databases {
        let settings = desired.settings(name);
        match observed.database(name) {
            None => actions.push(Action::CreateDatabase {
                name: name.clone(),
                settings,
            }),
            Some(db) if !db.settings.replica => return Err(Conflict::NotAReplica(name.clone())),
            Some(db) if db.settings != settings => actions.push(Action::UpdateDatabase {
                name: name.clone(),
                settings,
            }),
            Some(_) => {}
        }
    }
    Ok(actions)
}

/// After applying: each replica database must be loaded and point at the primary's database.
pub fn replica_problems(desired: &ReplicaDesired, observed: &Observed) -> Vec<(String, String)> {
    desired
        .databases
        .iter()
        .filter_map(|name| {
            let problem = match observed.database(name) {
                None => "missing after create".to_string(),
                Some(db) if !db.loaded => "not loaded".to_string(),
                Some(db) if db.settings != desired.settings(name) => format!(
                    "settings differ after update (replica={}, primary {}:{} database '{}')",
                    db.settings.replica,
                    db.settings.primary_host,
                    db.settings.primary_port,
                    db.settings.primary_database
                ),
                Some(_) => return None,
            };
            Some((name.clone(), problem))
        })
        .collect()
}

/// systemdb mode: the replica's defaultdb must replicate from the primary.
pub fn check_systemdb_replica(expected_host: &str, observed: &Observed) -> Result<(), Conflict> {
    let settings = observed
        .database("defaultdb")
        .map(|d| d.settings.clone())
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
        Some(db) if db.settings.replica => Err(Conflict::PrimaryIsAReplica),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ReplicaOptions {
        ReplicaOptions {
            sync_replication: false,
            prefetch_tx_buffer_size: 100,
            replication_commit_concurrency: 10,
            allow_tx_discarding: false,
            skip_integrity_check: false,
            wait_for_indexing: false,
        }
    }

    fn primary(dbs: &[&str], acks: Option<u32>) -> PrimaryDesired {
        PrimaryDesired {
            databases: dbs.iter().map(|d| d.to_string()).collect(),
            sync_acks: acks,
            replication_user: "replicator".into(),
        }
    }

    fn replica(dbs: &[&str]) -> ReplicaDesired {
        ReplicaDesired {
            databases: dbs.iter().map(|d| d.to_string()).collect(),
            primary_host: "primary".into(),
            primary_port: 3322,
            replication_user: "replicator".into(),
            replication_password: Secret::new("s3cret"),
            options: options(),
        }
    }

    fn db(name: &str, settings: ReplicationSettings) -> ObservedDatabase {
        ObservedDatabase {
            name: name.into(),
            settings,
            loaded: true,
            tx_count: 0,
        }
    }

    fn user(name: &str, perms: &[(&str, u32)], active: bool) -> ObservedUser {
        ObservedUser {
            name: name.into(),
            active,
            permissions: perms.iter().map(|(d, p)| (d.to_string(), *p)).collect(),
        }
    }

    #[test]
    fn empty_primary_gets_databases_then_user_then_grants() {
        let actions = plan_primary(&primary(&["a", "b"], None), &Observed::default()).unwrap();
        assert_eq!(actions.len(), 4);
        assert!(matches!(&actions[0], Action::CreateDatabase { name, .. } if name == "a"));
        assert!(matches!(&actions[1], Action::CreateDatabase { name, .. } if name == "b"));
        assert_eq!(
            actions[2],
            Action::CreateUser {
                user: "replicator".into(),
                database: "a".into(),
                permission: 254
            }
        );
        assert!(matches!(&actions[3], Action::GrantPermission { database, .. } if database == "b"));
    }

    #[test]
    fn primary_settings_never_carry_replica_fields() {
        // immudb rejects any replica-only field on a primary database.
        let actions = plan_primary(&primary(&["a"], Some(2)), &Observed::default()).unwrap();
        let Action::CreateDatabase { settings, .. } = &actions[0] else {
            panic!()
        };
        assert!(!settings.replica && settings.sync_replication && settings.sync_acks == 2);
        assert!(settings.primary_host.is_empty() && settings.prefetch_tx_buffer_size == 0);
    }

    #[test]
    fn converged_primary_needs_nothing() {
        let observed = Observed {
            databases: vec![db("a", ReplicationSettings::default())],
            users: vec![user("replicator", &[("a", 254)], true)],
        };
        assert_eq!(
            plan_primary(&primary(&["a"], None), &observed).unwrap(),
            vec![]
        );
    }

    #[test]
    fn weaker_permission_is_upgraded_to_admin() {
        // Read or ReadWrite do not replicate: the replica gets "permission denied".
        let observed = Observed {
            databases: vec![db("a", ReplicationSettings::default())],
            users: vec![user("replicator", &[("a", 2)], true)],
        };
        let actions = plan_primary(&primary(&["a"], None), &observed).unwrap();
        assert_eq!(
            actions,
            vec![Action::GrantPermission {
                user: "replicator".into(),
                database: "a".into(),
                permission: 254
            }]
        );
    }

    #[test]
    fn sync_change_updates_the_primary_database() {
        let observed = Observed {
            databases: vec![db("a", ReplicationSettings::default())],
            users: vec![user("replicator", &[("a", 254)], true)],
        };
        let actions = plan_primary(&primary(&["a"], Some(1)), &observed).unwrap();
        assert!(
            matches!(&actions[..], [Action::UpdateDatabase { settings, .. }] if settings.sync_acks == 1)
        );
    }

    #[test]
    fn primary_conflicts_stop() {
        let replica_db = ReplicationSettings {
            replica: true,
            ..Default::default()
        };
        let observed = Observed {
            databases: vec![db("a", replica_db)],
            users: vec![],
        };
        assert_eq!(
            plan_primary(&primary(&["a"], None), &observed),
            Err(Conflict::PrimaryDatabaseIsReplica("a".into()))
        );
        let inactive = Observed {
            databases: vec![db("a", ReplicationSettings::default())],
            users: vec![user("replicator", &[], false)],
        };
        assert_eq!(
            plan_primary(&primary(&["a"], None), &inactive),
            Err(Conflict::InactiveUser("replicator".into()))
        );
    }

    #[test]
    fn replica_is_created_updated_or_left_alone() {
        let desired = replica(&["a", "b", "c"]);
        let mut moved = desired.settings("b");
        moved.primary_host = "old-primary".into();
        let observed = Observed {
            databases: vec![db("b", moved), db("c", desired.settings("c"))],
            users: vec![],
        };
        let actions = plan_replica(&desired, &observed).unwrap();
        assert!(matches!(&actions[..], [
            Action::CreateDatabase { name: a, settings },
            Action::UpdateDatabase { name: b, .. },
        ] if a == "a" && b == "b" && settings.replica && settings.sync_acks == 0 && settings.primary_database == "a"));
    }

    #[test]
    fn rotated_replication_password_updates_the_replica() {
        let desired = replica(&["a"]);
        let mut stale = desired.settings("a");
        stale.primary_password = Secret::new("old");
        let observed = Observed {
            databases: vec![db("a", stale)],
            users: vec![],
        };
        assert_eq!(plan_replica(&desired, &observed).unwrap().len(), 1);
    }

    #[test]
    fn writable_database_on_a_replica_is_never_overwritten() {
        let observed = Observed {
            databases: vec![db("a", ReplicationSettings::default())],
            users: vec![],
        };
        assert_eq!(
            plan_replica(&replica(&["a"]), &observed),
            Err(Conflict::NotAReplica("a".into()))
        );
    }

    #[test]
    fn verification_names_each_problem() {
        let desired = replica(&["a", "b"]);
        let mut unloaded = db("a", desired.settings("a"));
        unloaded.loaded = false;
        let observed = Observed {
            databases: vec![unloaded],
            users: vec![],
        };
        let problems = replica_problems(&desired, &observed);
        assert_eq!(
            problems,
            vec![
                ("a".to_string(), "not loaded".to_string()),
                ("b".to_string(), "missing after create".to_string())
            ]
        );
    }

    #[test]
    fn systemdb_checks() {
        let replicating = Observed {
            databases: vec![db(
                "defaultdb",
                ReplicationSettings {
                    replica: true,
                    primary_host: "p".into(),
                    ..Default::default()
                },
            )],
            users: vec![],
        };
        assert!(check_systemdb_replica("p", &replicating).is_ok());
        assert!(check_systemdb_replica("q", &replicating).is_err());
        assert_eq!(
            check_systemdb_primary(&replicating),
            Err(Conflict::PrimaryIsAReplica)
        );
        assert!(check_systemdb_replica("p", &Observed::default()).is_err());
    }
}

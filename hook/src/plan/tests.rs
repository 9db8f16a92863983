//! Planner rules, one situation per test.

use super::*;
use crate::types::Secret;

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

fn named(dbs: &[&str]) -> Vec<DesiredDatabase> {
    dbs.iter().map(|d| DesiredDatabase::named(d)).collect()
}

fn primary(dbs: &[&str], acks: Option<u32>) -> PrimaryDesired {
    PrimaryDesired {
        databases: named(dbs),
        sync_acks: acks,
        replication_user: "replicator".into(),
    }
}

fn replica(dbs: &[&str]) -> ReplicaDesired {
    ReplicaDesired {
        databases: named(dbs),
        primary_host: "primary".into(),
        primary_port: 3322,
        replication_user: "replicator".into(),
        replication_password: Secret::new("s3cret"),
        options: options(),
    }
}

/// immudb reports every storage setting; these are its defaults.
fn immudb_defaults() -> StorageSettings {
    [
        (Setting::SyncFrequency, 20),
        (Setting::MaxConcurrency, 30),
        (Setting::FileSize, 1 << 29),
        (Setting::MaxKeyLen, 1024),
    ]
    .into_iter()
    .collect()
}

fn db(name: &str, replication: ReplicationSettings) -> ObservedDatabase {
    ObservedDatabase {
        name: name.into(),
        replication,
        storage: immudb_defaults(),
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

fn with_storage(mut desired: PrimaryDesired, pairs: &[(Setting, u64)]) -> PrimaryDesired {
    for db in &mut desired.databases {
        db.storage = pairs.iter().copied().collect();
    }
    desired
}

fn converged_primary(dbs: &[&str]) -> Observed {
    Observed {
        databases: dbs
            .iter()
            .map(|d| db(d, ReplicationSettings::default()))
            .collect(),
        users: vec![user(
            "replicator",
            &dbs.iter().map(|d| (*d, 254)).collect::<Vec<_>>(),
            true,
        )],
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
    let Action::CreateDatabase { replication, .. } = &actions[0] else {
        panic!()
    };
    assert!(!replication.replica && replication.sync_replication && replication.sync_acks == 2);
    assert!(replication.primary_host.is_empty() && replication.prefetch_tx_buffer_size == 0);
}

#[test]
fn converged_primary_needs_nothing() {
    let desired = with_storage(
        primary(&["a"], None),
        &[(Setting::SyncFrequency, 20), (Setting::FileSize, 1 << 29)],
    );
    assert_eq!(
        plan_primary(&desired, &converged_primary(&["a"])).unwrap(),
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
fn sync_change_updates_only_the_replication_of_the_primary_database() {
    let actions = plan_primary(&primary(&["a"], Some(1)), &converged_primary(&["a"])).unwrap();
    assert!(matches!(&actions[..],
        [Action::UpdateDatabase { replication: Some(r), storage, .. }] if r.sync_acks == 1 && storage.is_empty()));
    assert!(!actions[0].stores_settings_for_next_load());
}

#[test]
fn a_changed_setting_is_updated_alone_and_needs_a_load() {
    let desired = with_storage(
        primary(&["a"], None),
        &[(Setting::SyncFrequency, 1), (Setting::MaxConcurrency, 30)],
    );
    let actions = plan_primary(&desired, &converged_primary(&["a"])).unwrap();
    let [Action::UpdateDatabase {
        replication: None,
        storage,
        ..
    }] = &actions[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(
        storage.iter().collect::<Vec<_>>(),
        vec![(Setting::SyncFrequency, 1)]
    );
    assert!(actions[0].stores_settings_for_next_load());
}

#[test]
fn a_fixed_setting_that_differs_stops_the_node_before_any_action() {
    // "b" would be created, but "a" cannot take the new file size: nothing is planned.
    let desired = with_storage(
        primary(&["a", "b"], None),
        &[(Setting::SyncFrequency, 1), (Setting::FileSize, 1 << 20)],
    );
    let conflict = plan_primary(&desired, &converged_primary(&["a"])).unwrap_err();
    assert!(
        matches!(&conflict, Conflict::FixedSetting { database, differs }
        if database == "a" && differs.setting == Setting::FileSize)
    );
    assert!(conflict
        .to_string()
        .contains("fileSize is 536870912 but 1048576 is asked for"));
    // A new database simply gets the fixed settings at creation.
    let created = plan_primary(&desired, &Observed::default()).unwrap();
    assert!(matches!(&created[0], Action::CreateDatabase { storage, .. }
        if storage.get(Setting::FileSize) == Some(1 << 20)));
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
    let mut moved = desired.replication("b");
    moved.primary_host = "old-primary".into();
    let observed = Observed {
        databases: vec![db("b", moved), db("c", desired.replication("c"))],
        users: vec![],
    };
    let actions = plan_replica(&desired, &observed).unwrap();
    assert!(matches!(&actions[..], [
        Action::CreateDatabase { name: a, replication, .. },
        Action::UpdateDatabase { name: b, replication: Some(_), .. },
    ] if a == "a" && b == "b" && replication.replica && replication.sync_acks == 0 && replication.primary_database == "a"));
}

#[test]
fn a_replica_gets_the_same_storage_settings_as_the_primary() {
    let mut desired = replica(&["a"]);
    desired.databases[0].storage = [(Setting::SyncFrequency, 1)].into_iter().collect();
    let created = plan_replica(&desired, &Observed::default()).unwrap();
    assert!(matches!(&created[0], Action::CreateDatabase { storage, .. }
        if storage.get(Setting::SyncFrequency) == Some(1)));
    let observed = Observed {
        databases: vec![db("a", desired.replication("a"))],
        users: vec![],
    };
    let updated = plan_replica(&desired, &observed).unwrap();
    assert!(
        matches!(&updated[..], [Action::UpdateDatabase { replication: None, storage, .. }]
        if storage.get(Setting::SyncFrequency) == Some(1))
    );
}

#[test]
fn rotated_replication_password_updates_the_replica() {
    let desired = replica(&["a"]);
    let mut stale = desired.replication("a");
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
fn a_fenced_database_is_left_to_its_agent() {
    // The Job must not point a former primary's fenced database at the primary: its agent
    // first checks that its history is a prefix of the primary's.
    let observed = Observed {
        databases: vec![db("a", failover::fenced(&options()))],
        users: vec![],
    };
    assert_eq!(
        plan_replica(&replica(&["a"]), &observed),
        Err(Conflict::Fenced("a".into()))
    );
}

#[test]
fn verification_names_each_problem() {
    let desired = replica(&["a", "b"]);
    let mut unloaded = db("a", desired.replication("a"));
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
fn reloads_go_replica_by_replica_then_the_primary() {
    let settings: StorageSettings = [(Setting::SyncFrequency, 1)].into_iter().collect();
    let update = |name: &str, storage: StorageSettings| Action::UpdateDatabase {
        name: name.into(),
        replication: None,
        storage,
    };
    let primary_actions = vec![update("a", settings.clone()), update("b", settings.clone())];
    let replicas = vec![
        ("r1".to_string(), vec![update("a", settings.clone())]),
        (
            "r2".to_string(),
            vec![update("a", StorageSettings::default())],
        ),
        ("r3".to_string(), vec![update("b", settings)]),
    ];
    let order = reload_order(("p", &primary_actions), &replicas);
    assert_eq!(
        order,
        vec![
            ("r1", vec!["a".to_string()]),
            ("r3", vec!["b".to_string()]),
            ("p", vec!["a".to_string(), "b".to_string()]),
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

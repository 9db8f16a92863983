//! What follows a change of primary (rejoin, promotions, fences), one situation per test.

use super::*;

#[test]
fn a_returning_primary_follows_when_its_history_is_a_prefix() {
    let alh = [7; 32];
    let history = |local, primary_committed, theirs| History {
        local: (local, alh),
        primary_committed,
        primary_alh_at_local: theirs,
    };
    assert_eq!(rejoin(&history(0, 5, None)), Rejoin::Follow);
    assert_eq!(rejoin(&history(5, 9, Some(alh))), Rejoin::Follow);
    assert_eq!(rejoin(&history(5, 5, Some(alh))), Rejoin::Follow);
    let ahead = rejoin(&history(7, 5, None));
    assert!(
        matches!(&ahead, Rejoin::Diverged(why) if why.contains("the 2 after it exist only here")),
        "{ahead:?}"
    );
    assert!(matches!(
        rejoin(&history(5, 9, Some([8; 32]))),
        Rejoin::Diverged(_)
    ));
    assert!(matches!(rejoin(&history(5, 9, None)), Rejoin::Diverged(_)));
}

fn replica_desired(sync: bool) -> ReplicaDesired {
    ReplicaDesired {
        databases: vec![
            crate::plan::DesiredDatabase::named("appdb"),
            crate::plan::DesiredDatabase::named("audit"),
        ],
        primary_host: "db-immudb-primary".into(),
        primary_port: 3322,
        replication_user: "replicator".into(),
        replication_password: crate::types::Secret::new("pw"),
        options: crate::plan::ReplicaOptions {
            sync_replication: sync,
            allow_tx_discarding: true,
            replication_commit_concurrency: 30,
            prefetch_tx_buffer_size: 100,
            ..Default::default()
        },
    }
}

fn observed_db(name: &str, replication: ReplicationSettings) -> ObservedDatabase {
    ObservedDatabase {
        name: name.into(),
        replication,
        storage: StorageSettings::default(),
        loaded: true,
        tx_count: 3,
    }
}

fn replication_of(action: &Action) -> (&str, ReplicationSettings) {
    match action {
        Action::UpdateDatabase {
            name,
            replication: Some(r),
            storage,
        } if storage.is_empty() => (name, r.clone()),
        other => panic!("not a replication update: {other:?}"),
    }
}

#[test]
fn a_new_primary_commits_what_it_holds_before_it_turns_synchronous() {
    let desired = PrimaryDesired {
        databases: vec![
            crate::plan::DesiredDatabase::named("appdb"),
            crate::plan::DesiredDatabase::named("audit"),
        ],
        sync_acks: Some(1),
        replication_user: "replicator".into(),
    };
    let observed = Observed {
        databases: vec![
            observed_db("appdb", replica_desired(true).replication("appdb")),
            observed_db("audit", ReplicationSettings::default()),
        ],
        users: vec![],
    };
    let actions: Vec<_> = promotions(&desired, &observed)
        .iter()
        .map(|a| {
            let (name, r) = replication_of(a);
            (name.to_string(), r)
        })
        .collect();
    let sync = ReplicationSettings {
        sync_replication: true,
        sync_acks: 1,
        ..Default::default()
    };
    assert_eq!(
        actions,
        vec![
            ("appdb".to_string(), ReplicationSettings::default()),
            ("appdb".to_string(), sync),
        ],
        "audit is writable already"
    );
}

#[test]
fn a_pod_without_the_lease_fences_its_writable_databases_keeping_sync_on() {
    let desired = replica_desired(true);
    let observed = Observed {
        databases: vec![
            observed_db("appdb", ReplicationSettings::default()),
            observed_db("audit", desired.replication("audit")),
        ],
        users: vec![],
    };
    let actions = fences(&desired, &observed);
    assert_eq!(actions.len(), 1);
    let (name, fence) = replication_of(&actions[0]);
    assert_eq!(name, "appdb");
    assert!(fence.replica && fence.sync_replication && fence.primary_host.is_empty());
    assert_eq!(fence.sync_acks, 0, "immudb refuses acks on a replica");
    assert_eq!(
        (
            fence.prefetch_tx_buffer_size,
            fence.replication_commit_concurrency
        ),
        (100, 30),
        "immudb refuses a replica without them, also one that follows nobody"
    );
    assert!(is_fenced(&observed_db("appdb", fence)));
    assert!(!is_fenced(&observed_db(
        "audit",
        desired.replication("audit")
    )));
    let (_, followed) = replication_of(&follow(&desired, "appdb"));
    assert_eq!(followed, desired.replication("appdb"));
    assert!(followed.allow_tx_discarding);
}

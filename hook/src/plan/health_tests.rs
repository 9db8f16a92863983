//! The agent's decisions, one situation per test.

use super::*;
use crate::plan::progress::Bounds;
use crate::plan::{
    creates_databases, ObservedDatabase, ObservedUser, ReplicaOptions, ReplicationSettings,
    Setting, StorageSettings,
};
use crate::types::Secret;

pub(crate) const LIMITS: Limits = Limits {
    progress: Bounds {
        max_lag: Duration::from_secs(180),
        stall_after: Duration::from_secs(10),
        wake_after: Duration::from_secs(2),
        wake_backoff: (Duration::from_secs(10), Duration::from_secs(300)),
    },
    drift_grace: Duration::from_secs(300),
    restart_backoff: (Duration::from_secs(10), Duration::from_secs(300)),
};

fn at(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn desired() -> ReplicaDesired {
    ReplicaDesired {
        databases: vec![DesiredDatabase::named("appdb")],
        primary_host: "primary".into(),
        primary_port: 3322,
        replication_user: "replicator".into(),
        replication_password: Secret::new("pw"),
        options: ReplicaOptions {
            sync_replication: false,
            prefetch_tx_buffer_size: 100,
            replication_commit_concurrency: 30,
            allow_tx_discarding: false,
            skip_integrity_check: false,
            wait_for_indexing: false,
        },
    }
}

fn replica_db(tx_count: u64) -> ObservedDatabase {
    ObservedDatabase {
        name: "appdb".into(),
        replication: desired().replication("appdb"),
        storage: StorageSettings::default(),
        loaded: true,
        tx_count,
    }
}

fn observed(dbs: Vec<ObservedDatabase>) -> Observed {
    Observed {
        databases: dbs,
        users: vec![],
    }
}

fn primary(version: &str, tx: Option<u64>) -> PrimaryView {
    PrimaryView {
        version: version.into(),
        transactions: tx.into_iter().map(|tx| ("appdb".to_string(), tx)).collect(),
    }
}

/// One poll: the local databases, the replicator gauge, the primary (None = unreachable).
fn poll(
    memory: &mut Memory,
    now: Duration,
    dbs: Vec<ObservedDatabase>,
    replicators: u64,
    primary: Option<PrimaryView>,
) -> Assessment {
    let observed = observed(dbs);
    let gauges = BTreeMap::from([("appdb".to_string(), replicators)]);
    let view = ReplicaView {
        manage: true,
        observed: &observed,
        replicators: &gauges,
        local_version: "1.10.0",
        primary: primary.as_ref(),
        held_back: &BTreeMap::new(),
    };
    assess_replica(&desired(), &view, memory, now, &LIMITS)
}

fn state(assessment: &Assessment) -> State {
    assessment.databases[0].state
}

fn reasons(assessment: &Assessment) -> Vec<Repair> {
    assessment.repairs.iter().map(|(_, r)| *r).collect()
}

#[test]
fn a_missing_database_is_created_and_the_pod_waits() {
    let mut memory = Memory::default();
    let a = poll(
        &mut memory,
        at(0),
        vec![],
        0,
        Some(primary("1.10.0", Some(5))),
    );
    assert_eq!((state(&a), a.ready), (State::Missing, false));
    assert!(
        matches!(&a.repairs[..], [(Action::CreateDatabase { replication, .. }, Repair::Created)]
        if replication.replica && replication.primary_host == "primary")
    );
}

#[test]
fn a_new_replica_is_ready_once_it_holds_what_the_primary_had() {
    let mut memory = Memory::default();
    let p = || Some(primary("1.10.0", Some(8000)));
    let a = poll(&mut memory, at(0), vec![replica_db(100)], 30, p());
    assert_eq!((state(&a), a.ready), (State::CatchingUp, false));
    assert!(a.databases[0].replicating);
    let a = poll(&mut memory, at(5), vec![replica_db(8000)], 30, p());
    assert_eq!((state(&a), a.ready), (State::Replicating, true));
    assert!(a.repairs.is_empty());
}

#[test]
fn lag_beyond_the_bound_makes_an_advancing_replica_unready_until_it_catches_up() {
    let mut memory = Memory::default();
    let mut at_poll = |t: u64, replica: u64, primary_tx: u64| {
        poll(
            &mut memory,
            at(t),
            vec![replica_db(replica)],
            30,
            Some(primary("1.10.0", Some(primary_tx))),
        )
    };
    at_poll(0, 10, 10);
    at_poll(10, 10, 20);
    at_poll(100, 15, 30);
    let a = at_poll(150, 19, 30);
    assert_eq!(
        (state(&a), a.ready),
        (State::Replicating, true),
        "tx 20 appeared 140 s ago, within 180 s"
    );
    let a = at_poll(200, 19, 30);
    let lag = a.databases[0].lag.unwrap();
    assert_eq!((lag.transactions, lag.seconds), (11, 190.0));
    assert_eq!(
        (state(&a), a.ready),
        (State::Stalled, false),
        "no progress for 50 s"
    );
    let a = at_poll(205, 20, 30);
    assert_eq!(
        (state(&a), a.ready),
        (State::Replicating, true),
        "moving again, tx 21 appeared 105 s ago"
    );
    at_poll(300, 25, 30);
    let a = at_poll(305, 29, 30);
    assert_eq!(
        (state(&a), a.ready),
        (State::Lagging, false),
        "moving, but tx 30 is 205 s old"
    );
    assert!(a.wakes.is_empty(), "a replica that advances is never woken");
    let a = at_poll(310, 30, 30);
    assert_eq!((state(&a), a.ready), (State::Replicating, true));
}

#[test]
fn an_idle_async_replica_is_woken_when_a_write_arrives_and_a_sync_one_never() {
    for (sync, woken) in [(false, true), (true, false)] {
        let mut memory = Memory::default();
        let mut db = replica_db(3);
        db.replication.sync_replication = sync;
        let p = |tx| Some(primary("1.10.0", Some(tx)));
        poll(&mut memory, at(0), vec![db.clone()], 30, p(3));
        let a = poll(&mut memory, at(600), vec![db.clone()], 30, p(4));
        assert_eq!((state(&a), a.ready), (State::Replicating, true));
        let expected: Vec<Action> = if woken {
            vec![Action::WakeReplicator {
                name: "appdb".into(),
            }]
        } else {
            vec![]
        };
        assert_eq!(a.wakes, expected, "sync {sync}");
        if woken {
            assert!(a.repairs.is_empty(), "a wake is no repair");
        }
        // A stopped replicator is restarted by a reload, never woken.
        let a = poll(&mut memory, at(700), vec![db], 0, p(5));
        assert_eq!(state(&a), State::ReplicatorStopped);
        assert!(a.wakes.is_empty());
    }
}

#[test]
fn a_stopped_replicator_is_restarted_only_when_versions_match_and_with_backoff() {
    let mut memory = Memory::default();
    let a = poll(
        &mut memory,
        at(0),
        vec![replica_db(5)],
        0,
        Some(primary("1.11.1", Some(5))),
    );
    assert_eq!((state(&a), a.ready), (State::VersionMismatch, false));
    assert!(
        a.repairs.is_empty(),
        "restarting now would only stop it again"
    );
    let same = || Some(primary("1.10.0", Some(5)));
    let a = poll(&mut memory, at(5), vec![replica_db(5)], 0, same());
    assert_eq!(state(&a), State::ReplicatorStopped);
    assert!(
        matches!(&a.repairs[..], [(Action::ReloadDatabase { name }, Repair::ReplicatorRestarted)] if name == "appdb")
    );
    let a = poll(&mut memory, at(10), vec![replica_db(5)], 0, same());
    assert!(a.repairs.is_empty(), "waits 10 s before trying again");
    let a = poll(&mut memory, at(16), vec![replica_db(5)], 0, same());
    assert_eq!(reasons(&a), vec![Repair::ReplicatorRestarted]);
    let a = poll(&mut memory, at(30), vec![replica_db(5)], 0, same());
    assert!(a.repairs.is_empty(), "then 20 s");
    let a = poll(&mut memory, at(40), vec![replica_db(5)], 30, same());
    assert_eq!((state(&a), a.ready), (State::Replicating, true));
}

#[test]
fn drifted_settings_wait_out_the_grace_period() {
    let mut memory = Memory::default();
    let mut drifted = replica_db(5);
    drifted.replication.replication_commit_concurrency = 10;
    let p = || Some(primary("1.10.0", Some(5)));
    let a = poll(&mut memory, at(0), vec![drifted.clone()], 10, p());
    assert!(a.repairs.is_empty());
    assert!(a.databases[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("updated after 300 s"));
    assert!(poll(&mut memory, at(299), vec![drifted.clone()], 10, p())
        .repairs
        .is_empty());
    let a = poll(&mut memory, at(300), vec![drifted.clone()], 10, p());
    assert!(
        matches!(&a.repairs[..], [(Action::UpdateDatabase { replication: Some(r), .. }, Repair::Settings)]
        if r.replication_commit_concurrency == 30)
    );
    // Drift that goes away on its own (the spec caught up) resets the clock.
    let mut memory = Memory::default();
    poll(&mut memory, at(0), vec![drifted.clone()], 10, p());
    poll(&mut memory, at(100), vec![replica_db(5)], 30, p());
    assert!(poll(&mut memory, at(350), vec![drifted], 10, p())
        .repairs
        .is_empty());
}

/// A setting immudb accepts but never reports back (as with a wrong field number): the update is
/// sent once, then reported (detail and flag) instead of being sent again every grace period.
#[test]
fn an_update_immudb_accepts_but_does_not_report_back_is_sent_once() {
    let mut memory = Memory::default();
    let mut drifted = replica_db(5);
    drifted.replication.replication_commit_concurrency = 10;
    let p = || Some(primary("1.10.0", Some(5)));
    poll(&mut memory, at(0), vec![drifted.clone()], 10, p());
    let sent = poll(&mut memory, at(300), vec![drifted.clone()], 10, p());
    let [(update, Repair::Settings)] = &sent.repairs[..] else {
        panic!("one settings update: {:?}", sent.repairs);
    };
    assert!(!sent.databases[0].settings_unconfirmed);
    memory.update_applied(update);

    for seconds in [305, 600, 900, 3600] {
        let again = poll(&mut memory, at(seconds), vec![drifted.clone()], 10, p());
        assert!(again.repairs.is_empty(), "sent again at {seconds} s");
        let db = &again.databases[0];
        assert!(db.settings_unconfirmed);
        assert!(db
            .detail
            .as_deref()
            .unwrap()
            .starts_with("immudb accepted the replication settings but reports other values"));
        assert_eq!((db.state, again.ready), (State::Replicating, true));
    }
    // immudb reports the value after all (a restart): nothing is left to report.
    let fine = poll(&mut memory, at(3700), vec![replica_db(5)], 30, p());
    assert!(!fine.databases[0].settings_unconfirmed && fine.databases[0].detail.is_none());
    // A new drift is a new update: the grace period applies again, then it is sent.
    assert!(poll(&mut memory, at(3800), vec![drifted.clone()], 10, p())
        .repairs
        .is_empty());
    assert_eq!(
        reasons(&poll(&mut memory, at(4100), vec![drifted], 10, p())),
        vec![Repair::Settings]
    );
}

#[test]
fn the_primary_reports_an_update_immudb_does_not_report_back_once() {
    let desired = PrimaryDesired {
        databases: vec![DesiredDatabase {
            name: "appdb".into(),
            storage: [(Setting::RetentionPeriod, 172_800_000)]
                .into_iter()
                .collect(),
        }],
        sync_acks: None,
        replication_user: "replicator".into(),
    };
    let ignored = Observed {
        databases: vec![ObservedDatabase {
            name: "appdb".into(),
            replication: ReplicationSettings::default(),
            storage: StorageSettings::default(),
            loaded: true,
            tx_count: 1,
        }],
        users: vec![ObservedUser {
            name: "replicator".into(),
            active: true,
            permissions: BTreeMap::from([("appdb".to_string(), crate::plan::PERMISSION_ADMIN)]),
        }],
    };
    let mut memory = Memory::default();
    let none = BTreeMap::new();
    assert!(
        assess_primary(&desired, &ignored, &none, &mut memory, at(0), &LIMITS)
            .repairs
            .is_empty()
    );
    let sent = assess_primary(&desired, &ignored, &none, &mut memory, at(300), &LIMITS);
    let [(update, Repair::Settings)] = &sent.repairs[..] else {
        panic!("one settings update: {:?}", sent.repairs);
    };
    memory.update_applied(update);
    let again = assess_primary(&desired, &ignored, &none, &mut memory, at(900), &LIMITS);
    assert!(again.repairs.is_empty());
    assert!(again.databases[0].settings_unconfirmed && again.ready);
    assert_eq!(
        again.databases[0].detail.as_deref(),
        Some("immudb accepted retentionPeriod=2d but reports other values; not sent again until the spec or immudb's values change")
    );
}

#[test]
fn a_writable_database_is_reported_and_left_alone() {
    let mut memory = Memory::default();
    let mut writable = replica_db(5);
    writable.replication = ReplicationSettings::default();
    let a = poll(
        &mut memory,
        at(0),
        vec![writable],
        0,
        Some(primary("1.10.0", Some(5))),
    );
    assert_eq!((state(&a), a.ready), (State::NotAReplica, false));
    assert!(a.repairs.is_empty());
}

#[test]
fn without_a_primary_a_replica_that_caught_up_stays_ready() {
    let mut memory = Memory::default();
    let a = poll(&mut memory, at(0), vec![replica_db(5)], 30, None);
    assert_eq!(
        (state(&a), a.ready),
        (State::PrimaryUnreachable, false),
        "never caught up"
    );
    poll(
        &mut memory,
        at(5),
        vec![replica_db(5)],
        30,
        Some(primary("1.10.0", Some(5))),
    );
    let a = poll(&mut memory, at(10), vec![replica_db(5)], 30, None);
    assert_eq!((state(&a), a.ready), (State::PrimaryUnreachable, true));
    assert!(!a.databases[0].replicating);
}

#[test]
fn an_unloaded_database_is_loaded() {
    let mut memory = Memory::default();
    let mut unloaded = replica_db(5);
    unloaded.loaded = false;
    let a = poll(
        &mut memory,
        at(0),
        vec![unloaded],
        0,
        Some(primary("1.10.0", Some(5))),
    );
    assert_eq!(state(&a), State::NotLoaded);
    assert!(matches!(
        &a.repairs[..],
        [(Action::LoadDatabase { .. }, Repair::Loaded)]
    ));
}

#[test]
fn the_primary_creates_what_is_missing_unless_a_replica_holds_it() {
    let desired = PrimaryDesired {
        databases: vec![DesiredDatabase {
            name: "appdb".into(),
            storage: [(Setting::SyncFrequency, 5)].into_iter().collect(),
        }],
        sync_acks: None,
        replication_user: "replicator".into(),
    };
    let empty = Observed::default();
    assert_eq!(
        creates_databases(&desired, &empty),
        vec!["appdb".to_string()]
    );
    let mut memory = Memory::default();
    let fresh = assess_primary(
        &desired,
        &empty,
        &BTreeMap::new(),
        &mut memory,
        at(0),
        &LIMITS,
    );
    assert_eq!(
        fresh.repairs.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
        vec![Repair::Created, Repair::User]
    );
    assert!(!fresh.ready);
    let held = BTreeMap::from([("appdb".to_string(), ("read-0".to_string(), 42))]);
    let lost = assess_primary(&desired, &empty, &held, &mut memory, at(0), &LIMITS);
    assert_eq!(lost.databases[0].state, State::LostOnPrimary);
    assert!(lost.databases[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("read-0 holds 42 transactions"));
    assert!(!lost
        .repairs
        .iter()
        .any(|(a, _)| matches!(a, Action::CreateDatabase { .. })));
}

#[test]
fn in_systemdb_mode_the_agent_observes_and_changes_nothing() {
    let mut memory = Memory::default();
    let observed = observed(vec![replica_db(5)]);
    let stopped = BTreeMap::from([("appdb".to_string(), 0)]);
    let p = primary("1.10.0", Some(5));
    let view = ReplicaView {
        manage: false,
        observed: &observed,
        replicators: &stopped,
        local_version: "1.10.0",
        primary: Some(&p),
        held_back: &BTreeMap::new(),
    };
    let a = assess_replica(&desired(), &view, &mut memory, at(0), &LIMITS);
    assert_eq!((state(&a), a.ready), (State::ReplicatorStopped, false));
    assert!(
        a.repairs.is_empty(),
        "immudb refuses to reload the reserved defaultdb"
    );
}

#[test]
fn a_database_failover_holds_back_is_neither_repaired_nor_ready() {
    let mut memory = Memory::default();
    // Fenced: replica without a primary host, settings unlike the spec's; the agent would
    // update them after the grace, unless failover holds the database back.
    let mut fenced = replica_db(5);
    fenced.replication = crate::plan::failover::fenced(&desired().options);
    let observed = observed(vec![fenced]);
    let gauges = BTreeMap::from([("appdb".to_string(), 0)]);
    let p = primary("1.10.0", Some(4));
    let held = BTreeMap::from([(
        "appdb".to_string(),
        (
            State::Diverged,
            "holds 5 committed transactions, the primary 4".to_string(),
        ),
    )]);
    for t in [0, 400] {
        let view = ReplicaView {
            manage: true,
            observed: &observed,
            replicators: &gauges,
            local_version: "1.10.0",
            primary: Some(&p),
            held_back: &held,
        };
        let a = assess_replica(&desired(), &view, &mut memory, at(t), &LIMITS);
        assert_eq!((state(&a), a.ready), (State::Diverged, false));
        assert!(a.repairs.is_empty(), "{:?}", a.repairs);
        assert!(a.databases[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("primary 4"));
    }
}

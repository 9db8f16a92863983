//! Every settings request the hook can send, for every role and transition, put through the
//! double's copy of immudb 1.11.1's settings rules (`immudb_double::options`: `overwriteWith` and
//! `Validate` of pkg/server/db_options.go) in the order a cluster's life sends them, each applied
//! to what the step before left. The hook's own code plans and builds each request
//! (`plan`, `client::convert`, `client::transactions`); it is encoded with the hook's generated
//! types and decoded into the double's (both are generated from the same .proto, so this round
//! trip cannot catch a wrong field number: `hook/tests/wire.rs` holds the proto against immudb
//! 1.11.1's own list), and the result is read back as the hook reads DatabaseListV2. Every step
//! must be accepted and leave the settings it intends.

mod server;

use immudb_hook::client::convert::{self, SettingsRequest};
use immudb_hook::client::transactions::replay_target_request;
use immudb_hook::config::spec::Context;
use immudb_hook::config::{DatabaseReplication, Desired, Spec};
use immudb_hook::plan::failover::{self, is_fenced};
use immudb_hook::plan::replay::{self, Preparation};
use immudb_hook::plan::{
    plan_primary, plan_replica, Conflict, DesiredDatabase, PrimaryDesired, ReplicaDesired,
    ReplicationSettings, Setting, StorageSettings,
};
use server::{settings_changes, Server};

#[derive(Clone, Copy, Debug)]
struct Variant {
    sync_acks: Option<u32>,
    allow_tx_discarding: bool,
    /// skipIntegrityCheck and waitForIndexing on the replicas.
    replica_checks: bool,
}

impl Variant {
    /// The same cluster with another synchronous replication setting.
    fn other_sync(self) -> Variant {
        let sync_acks = match self.sync_acks {
            None => Some(1),
            Some(1) => Some(2),
            Some(_) => None,
        };
        Variant { sync_acks, ..self }
    }
}

/// Asynchronous and synchronous specs, allowTxDiscarding off and on (failover sets it), and the
/// replicas' integrity and indexing options.
fn variants() -> [Variant; 5] {
    [
        (None, false, false),
        (None, true, false),
        (Some(1), false, false),
        (Some(1), true, false),
        (Some(2), true, true),
    ]
    .map(|(sync_acks, allow_tx_discarding, replica_checks)| Variant {
        sync_acks,
        allow_tx_discarding,
        replica_checks,
    })
}

/// The spec the chart renders for `variant`, read by the hook's own parser.
fn chart_spec(variant: Variant, replication_password: &str) -> DatabaseReplication {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("replication-password");
    std::fs::write(&password, replication_password).unwrap();
    let spec: Spec = serde_json::from_value(serde_json::json!({
        "databases": [
            "appdb",
            {"name": "audit", "settings": {"syncFrequency": "20ms", "retentionPeriod": "48h", "truncationFrequency": "2h"}},
        ],
        "settings": {"syncFrequency": "1ms", "maxConcurrency": 30, "maxKeyLen": 512, "preallocFiles": true},
        "replication": {
            "sync": {"enabled": variant.sync_acks.is_some(), "acks": variant.sync_acks.unwrap_or(0)},
            "prefetchTxBufferSize": 300,
            "commitConcurrency": 30,
            "allowTxDiscarding": variant.allow_tx_discarding,
            "skipIntegrityCheck": variant.replica_checks,
            "waitForIndexing": variant.replica_checks,
        },
    }))
    .unwrap();
    let context = Context {
        replica_count: 2,
        primary_host_for_replicas: "db-immudb-primary".into(),
        replication_password_file: Some(&password),
        dials: true,
    };
    match spec.desired(context).unwrap() {
        Desired::Database(replication) => replication,
        Desired::Systemdb { .. } => unreachable!("database mode"),
    }
}

fn names(desired: &PrimaryDesired) -> Vec<String> {
    desired.databases.iter().map(|d| d.name.clone()).collect()
}

/// Every declared database holds the storage settings the spec declares.
fn assert_storage(step: &str, server: &Server, desired: &PrimaryDesired) {
    for wanted in &desired.databases {
        let have = server.database(&wanted.name).storage;
        assert!(
            wanted.storage.changes_from(&have).is_empty()
                && wanted.storage.fixed_differences(&have).is_empty(),
            "{step}: {} holds {have}, the spec {}",
            wanted.name,
            wanted.storage
        );
    }
}

/// Writable with the primary's sync settings and nothing of a replica's; the planner wants no
/// further settings change.
fn assert_primary(step: &str, server: &Server, desired: &PrimaryDesired) {
    for name in names(desired) {
        assert_eq!(
            server.database(&name).replication,
            ReplicationSettings::writable(desired.sync_acks),
            "{step}: {name}"
        );
    }
    assert_storage(step, server, desired);
    let plan = plan_primary(desired, &server.observed()).unwrap();
    assert!(
        settings_changes(&plan).is_empty(),
        "{step}: converged, yet {plan:?}"
    );
}

/// A replica of the primary with the spec's options; the planner wants no further change.
fn assert_following(step: &str, server: &Server, desired: &ReplicaDesired) {
    for wanted in &desired.databases {
        let have = server.database(&wanted.name);
        assert_eq!(
            have.replication,
            desired.replication(&wanted.name),
            "{step}: {}",
            wanted.name
        );
        assert!(!is_fenced(&have), "{step}: {}", wanted.name);
    }
    let plan = plan_replica(desired, &server.observed()).unwrap();
    assert!(
        settings_changes(&plan).is_empty(),
        "{step}: converged, yet {plan:?}"
    );
}

/// Read-only (a replica), following nobody, synchronous replication kept as the spec has it (so
/// nothing precommitted commits) and the spec's replica options; recognised as fenced by the
/// agent (and so by the election), left alone by the Job, with nothing left to fence.
fn assert_fenced(step: &str, server: &Server, desired: &ReplicaDesired) {
    for wanted in &desired.databases {
        let have = server.database(&wanted.name);
        assert!(is_fenced(&have), "{step}: {:?}", have.replication);
        assert_eq!(
            have.replication,
            ReplicationSettings {
                primary_database: String::new(),
                primary_host: String::new(),
                primary_port: 0,
                primary_username: String::new(),
                primary_password: Default::default(),
                ..desired.replication(&wanted.name)
            },
            "{step}: {}",
            wanted.name
        );
    }
    let first = desired.databases[0].name.clone();
    assert_eq!(
        plan_replica(desired, &server.observed()),
        Err(Conflict::Fenced(first)),
        "{step}: the Job leaves a fenced database to its agent"
    );
    assert!(
        failover::fences(desired, &server.observed()).is_empty(),
        "{step}: nothing writable is left to fence"
    );
}

/// `restore` and `rebuild-primary` into `name`, as `backup::replay_target` sends it: prepared as
/// a replay target, transactions replayed (they change no settings), writable again.
fn replay_into(step: &str, server: &mut Server, name: &str) -> ReplicationSettings {
    let before = replay_prepare(step, server, name);
    replay_finish(step, server, name, before.as_ref())
}

/// Returns the settings the target had before, which decide what it becomes afterwards.
fn replay_prepare(step: &str, server: &mut Server, name: &str) -> Option<ReplicationSettings> {
    let before = server
        .observed()
        .database(name)
        .map(|d| d.replication.clone());
    match replay::preparation(before.as_ref()) {
        Preparation::Create => {
            server.send(step, SettingsRequest::Create(replay_target_request(name)))
        }
        Preparation::Switch => server.send(step, replication_update(name, &replay::replaying())),
        Preparation::Ready => {}
    }
    let target = server.database(name).replication;
    assert!(
        target.replica && target.follows_nobody(),
        "{step}: replicateTx needs a replica that follows nobody: {target:?}"
    );
    assert!(
        !target.sync_replication,
        "{step}: a synchronous replica would only precommit what is replayed"
    );
    before
}

fn replay_finish(
    step: &str,
    server: &mut Server,
    name: &str,
    before: Option<&ReplicationSettings>,
) -> ReplicationSettings {
    server.send(
        step,
        replication_update(name, &replay::writable_after(before)),
    );
    let after = server.database(name).replication;
    assert!(!after.replica, "{step}: writable again: {after:?}");
    after
}

fn replication_update(name: &str, settings: &ReplicationSettings) -> SettingsRequest {
    SettingsRequest::Update(convert::update_request(
        name,
        Some(settings),
        &StorageSettings::default(),
    ))
}

/// A settings change made outside the chart (an operator, another tool): what drift looks like.
fn drift(step: &str, server: &mut Server, name: &str, replication: Option<&ReplicationSettings>) {
    let storage: StorageSettings = [
        (Setting::SyncFrequency, 20),
        (Setting::MaxConcurrency, 50),
        (Setting::RetentionPeriod, 0),
    ]
    .into_iter()
    .collect();
    let request = convert::update_request(name, replication, &storage);
    server.send(step, SettingsRequest::Update(request));
}

/// The primary's and the replicas' side: created, sync settings changed and back, drifted
/// settings restored, a new replication password.
fn primary_and_replica(variant: Variant) -> (Server, Server) {
    let step = |what: &str| format!("{variant:?}: {what}");
    let spec = chart_spec(variant, "pw");
    let (primary_desired, replica_desired) = (spec.primary_desired(), spec.replica_desired(3322));
    let mut primary = Server::default();
    let mut replica = Server::default();

    primary.apply(
        &step("primary created"),
        &plan_primary(&primary_desired, &primary.observed()).unwrap(),
    );
    assert_primary(&step("primary created"), &primary, &primary_desired);
    replica.apply(
        &step("replica created"),
        &plan_replica(&replica_desired, &replica.observed()).unwrap(),
    );
    assert_following(&step("replica created"), &replica, &replica_desired);

    // Synchronous replication changed by `helm upgrade`, on both sides, and changed back.
    let other = chart_spec(variant.other_sync(), "pw");
    for (what, spec) in [("sync changed", &other), ("sync changed back", &spec)] {
        let (p, r) = (spec.primary_desired(), spec.replica_desired(3322));
        primary.apply(&step(what), &plan_primary(&p, &primary.observed()).unwrap());
        assert_primary(&step(what), &primary, &p);
        replica.apply(&step(what), &plan_replica(&r, &replica.observed()).unwrap());
        assert_following(&step(what), &replica, &r);
    }

    for name in names(&primary_desired) {
        drift(&step("primary drifts"), &mut primary, &name, None);
        let moved = ReplicationSettings {
            primary_host: "old-primary".into(),
            prefetch_tx_buffer_size: 100,
            replication_commit_concurrency: 10,
            ..replica_desired.replication(&name)
        };
        drift(&step("replica drifts"), &mut replica, &name, Some(&moved));
    }
    primary.apply(
        &step("primary's drift restored"),
        &plan_primary(&primary_desired, &primary.observed()).unwrap(),
    );
    assert_primary(
        &step("primary's drift restored"),
        &primary,
        &primary_desired,
    );
    replica.apply(
        &step("replica's drift restored"),
        &plan_replica(&replica_desired, &replica.observed()).unwrap(),
    );
    assert_following(
        &step("replica's drift restored"),
        &replica,
        &replica_desired,
    );

    let rotated = chart_spec(variant, "rotated").replica_desired(3322);
    replica.apply(
        &step("new replication password"),
        &plan_replica(&rotated, &replica.observed()).unwrap(),
    );
    assert_following(&step("new replication password"), &replica, &rotated);
    replica.apply(
        &step("password back"),
        &plan_replica(&replica_desired, &replica.observed()).unwrap(),
    );
    (primary, replica)
}

#[test]
fn every_role_and_transition_passes_immudbs_settings_rules() {
    for variant in variants() {
        let step = |what: &str| format!("{variant:?}: {what}");
        let spec = chart_spec(variant, "pw");
        let (primary_desired, replica_desired) =
            (spec.primary_desired(), spec.replica_desired(3322));
        let (mut old_primary, mut new_primary) = primary_and_replica(variant);

        // Failover: the replica takes the Lease and promotes its databases.
        new_primary.apply(
            &step("promoted"),
            &failover::promotions(&primary_desired, &new_primary.observed()),
        );
        assert_primary(&step("promoted"), &new_primary, &primary_desired);

        // The old primary returns without the Lease: fenced at once.
        old_primary.apply(
            &step("fenced"),
            &failover::fences(&replica_desired, &old_primary.observed()),
        );
        assert_fenced(&step("fenced"), &old_primary, &replica_desired);

        // Diverged: compared with the new primary and left as fenced; later polls send nothing.
        let mut diverged = old_primary.clone();
        diverged.apply(
            &step("diverged, a later poll"),
            &failover::fences(&replica_desired, &diverged.observed()),
        );
        assert_fenced(&step("diverged"), &diverged, &replica_desired);

        // A fenced pod that takes the Lease later promotes its fenced databases.
        let mut fenced_then_elected = old_primary.clone();
        fenced_then_elected.apply(
            &step("fenced, then promoted"),
            &failover::promotions(&primary_desired, &fenced_then_elected.observed()),
        );
        assert_primary(
            &step("fenced, then promoted"),
            &fenced_then_elected,
            &primary_desired,
        );

        // Its history is a prefix of the new primary's: it follows.
        for name in names(&primary_desired) {
            old_primary.apply(
                &step("rejoined"),
                &[failover::follow(&replica_desired, &name)],
            );
        }
        assert_following(&step("rejoined"), &old_primary, &replica_desired);
        if variant.allow_tx_discarding {
            assert!(
                old_primary
                    .database("appdb")
                    .replication
                    .allow_tx_discarding
            );
        }
    }
}

#[test]
fn restores_and_rebuilds_pass_immudbs_settings_rules() {
    for variant in variants() {
        let step = |what: &str| format!("{variant:?}: {what}");
        let primary_desired = chart_spec(variant, "pw").primary_desired();
        let (mut primary, _) = primary_and_replica(variant);

        // restore --append into the primary's database, and a new database restored beside it.
        let appended = replay_into(&step("restore --append"), &mut primary, "appdb");
        assert_eq!(
            appended,
            ReplicationSettings::writable(primary_desired.sync_acks),
            "{variant:?}: the primary's sync settings come back"
        );
        assert_primary(&step("restore --append"), &primary, &primary_desired);
        let restored_as = replay_into(&step("restore --restore-as"), &mut primary, "appdb_copy");
        assert_eq!(restored_as, ReplicationSettings::writable(None));

        // At install, before the replication hook: restored into an empty server; a run that
        // stopped halfway and its --append; then the hook converges the primary.
        let mut installed = Server::default();
        replay_into(&step("restore at install"), &mut installed, "appdb");
        replay_prepare(&step("restore stopped halfway"), &mut installed, "audit");
        let before = replay_prepare(&step("restore --append continues"), &mut installed, "audit");
        replay_finish(
            &step("restore --append continues"),
            &mut installed,
            "audit",
            before.as_ref(),
        );
        // A restore creates its target with immudb's fixed settings (the hook then refuses a
        // spec that fixes others: exit 5); the changeable ones are the hook's to set.
        let changeable = PrimaryDesired {
            databases: primary_desired
                .databases
                .iter()
                .map(|db| DesiredDatabase {
                    storage: db
                        .storage
                        .iter()
                        .filter(|(setting, _)| !setting.is_fixed_at_creation())
                        .collect(),
                    ..db.clone()
                })
                .collect(),
            ..primary_desired.clone()
        };
        installed.apply(
            &step("the hook after a restore"),
            &plan_primary(&changeable, &installed.observed()).unwrap(),
        );
        assert_primary(&step("the hook after a restore"), &installed, &changeable);

        // rebuild-primary: a database missing on the new primary, and one its agent created
        // empty with the primary's settings before the rebuild.
        let mut rebuilt = Server::default();
        let created = replay_into(&step("rebuild, missing"), &mut rebuilt, "appdb");
        assert_eq!(created, ReplicationSettings::writable(None));
        rebuilt.apply(
            &step("rebuild, created by the agent"),
            &plan_primary(&changeable, &rebuilt.observed()).unwrap(),
        );
        let refilled = replay_into(
            &step("rebuild, created by the agent"),
            &mut rebuilt,
            "audit",
        );
        assert_eq!(
            refilled,
            ReplicationSettings::writable(primary_desired.sync_acks)
        );
    }
}

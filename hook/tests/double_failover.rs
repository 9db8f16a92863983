//! What failover relies on, the double answering like immudb (`shared/immudb-facts.md`,
//! pkg/replication/replicator.go, pkg/server/db_options.go): synchronous acknowledgements,
//! promotion (only `replica=false` keeps synchronous replication, which immudb then refuses
//! without acks), `allowTxDiscarding` dropping precommitted transactions the new primary lacks,
//! and a committed divergence that is never overwritten.

mod common;

use std::time::Duration;

use common::*;
use immudb_hook::client::{Client, SettingsRequest};
use immudb_hook::plan::{Action, ReplicationSettings, StorageSettings};
use immudb_hook::proto::{
    DatabaseNullableSettings, NullableBool, ReplicationNullableSettings, UpdateDatabaseRequest,
};
use immudb_hook::reconcile::converge;
use immudb_hook::types::Secret;

const WAIT: Duration = Duration::from_secs(10);

/// An admin session on `node`'s `database`.
async fn session(node: &immudb_double::Node, database: &str) -> Client {
    let client = Client::new(&target(node))
        .unwrap()
        .open_session(&admin(), "defaultdb")
        .await
        .unwrap();
    client.use_database(database).await.unwrap();
    client
}

fn sync_spec() -> serde_json::Value {
    serde_json::json!({"databases": ["appdb"], "replication": {"sync": {"enabled": true, "acks": 1}}})
}

/// A primary and one synchronous replica of appdb (acks 1), converged by the Job.
async fn sync_pair(cluster: &Cluster) -> Vec<immudb_double::Node> {
    let nodes = start_all(cluster, 1).await;
    let report =
        converge(&cluster.converge_config(&cluster.replica_hosts(1), 20, sync_spec(), &[])).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    nodes
}

fn positions(node: &immudb_double::Node) -> (u64, u64) {
    node.with_state(|s| {
        let ledger = &s.databases["appdb"].ledger;
        (ledger.tx_count(), ledger.precommitted_id())
    })
}

/// UpdateDatabaseV2 with only `replica=false`, as an operator promotes a replica by hand.
async fn promote_with_only_replica_false(
    client: &Client,
    database: &str,
) -> Result<(), immudb_hook::client::RpcError> {
    let request = UpdateDatabaseRequest {
        database: database.into(),
        settings: Some(DatabaseNullableSettings {
            replication_settings: Some(ReplicationNullableSettings {
                replica: Some(NullableBool { value: false }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    client.send_settings(SettingsRequest::Update(request)).await
}

fn update(name: &str, replication: ReplicationSettings) -> Action {
    Action::UpdateDatabase {
        name: name.into(),
        replication: Some(replication),
        storage: StorageSettings::default(),
    }
}

#[tokio::test]
async fn a_synchronous_write_commits_once_a_replica_holds_it_and_waits_without_one() {
    let cluster = Cluster::new();
    let mut nodes = sync_pair(&cluster).await;
    let writer = session(&nodes[0], "appdb").await;
    assert_eq!(writer.set(b"k", b"1").await.unwrap(), 1);
    assert!(eventually(WAIT, || async { positions(&nodes[1]).1 == 1 }).await);

    // The replica stops: the write is stored (precommitted) but never acknowledged.
    let replica = nodes.pop().unwrap();
    drop(replica);
    let timed_out = tokio::time::timeout(Duration::from_millis(300), writer.set(b"k", b"2")).await;
    assert!(timed_out.is_err(), "no acknowledgement, no commit");
    assert_eq!(positions(&nodes[0]), (1, 2));
    assert_eq!(
        writer.get(b"k").await.unwrap(),
        b"1",
        "an uncommitted write is not read"
    );

    // The replica returns: the precommitted write commits, though its client gave up.
    // (A new replica: the double's restarted node starts empty, as on a new volume.)
    let _back = cluster.start_node(1).await;
    let report =
        converge(&cluster.converge_config(&cluster.replica_hosts(1), 20, sync_spec(), &[])).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(eventually(WAIT, || async { positions(&nodes[0]) == (2, 2) }).await);
    assert_eq!(writer.get(b"k").await.unwrap(), b"2");
}

#[tokio::test]
async fn a_write_waiting_for_its_acknowledgement_ends_when_the_server_stops() {
    let cluster = Cluster::new();
    let mut nodes = sync_pair(&cluster).await;
    drop(nodes.pop());
    let writer = session(&nodes[0], "appdb").await;
    let waiting = tokio::spawn(async move { writer.set(b"k", b"1").await });
    assert!(eventually(WAIT, || async { positions(&nodes[0]) == (0, 1) }).await);
    assert!(!waiting.is_finished(), "no replica acknowledges it");
    // The process stops: its connections end, and the call with them.
    nodes[0].isolate(true);
    let ended = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("the call ends with the server")
        .unwrap();
    assert_eq!(ended.unwrap_err().code, tonic::Code::Unavailable);
    // Back on its volume, it commits again once acknowledged (the syncer outlived the stop).
    nodes[0].isolate(false);
    let again = session(&nodes[0], "appdb").await;
    again
        .apply(
            &update("appdb", ReplicationSettings::writable(None)),
            &Secret::default(),
        )
        .await
        .unwrap();
    assert_eq!(again.set(b"k", b"2").await.unwrap(), 2);
}

#[tokio::test]
async fn promotion_with_only_replica_false_keeps_sync_as_immudb_does() {
    let cluster = Cluster::new();
    let mut nodes = sync_pair(&cluster).await;
    let writer = session(&nodes[0], "appdb").await;
    writer.set(b"k", b"1").await.unwrap();
    assert!(eventually(WAIT, || async { positions(&nodes[1]) == (1, 1) }).await);
    drop(nodes.remove(0));

    let promoted = session(&nodes[0], "appdb").await;
    let refused = promoted.set(b"k", b"x").await.unwrap_err();
    assert_eq!(
        refused.message,
        "database is read-only because it's a replica"
    );
    // immudb keeps syncReplication when an update leaves it unset and drops a replica's acks:
    // a synchronous primary without acknowledgements is refused.
    let refused = promote_with_only_replica_false(&promoted, "appdb")
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (
            tonic::Code::InvalidArgument,
            "illegal arguments: rpc error: code = InvalidArgument desc = illegal arguments: invalid replication options for primary database 'appdb'. It is necessary to have at least one sync replica"
        )
    );
    promoted
        .apply(
            &update("appdb", ReplicationSettings::writable(None)),
            &Secret::default(),
        )
        .await
        .unwrap();
    let observed = promoted.list_databases().await.unwrap();
    let appdb = observed.iter().find(|d| d.name == "appdb").unwrap();
    assert_eq!(
        appdb.replication,
        ReplicationSettings::default(),
        "every replica field cleared"
    );
    assert_eq!(promoted.set(b"k", b"2").await.unwrap(), 2);
    assert_eq!(promoted.get(b"k").await.unwrap(), b"2");
}

/// The old primary of a sync pair, after a failover to its replica: it holds one transaction
/// precommitted that nobody acknowledged; the new primary wrote its own after the common ones.
async fn after_failover(
    cluster: &Cluster,
    allow_tx_discarding: bool,
) -> (immudb_double::Node, immudb_double::Node) {
    let mut nodes = sync_pair(cluster).await;
    let writer = session(&nodes[0], "appdb").await;
    writer.set(b"k", b"acknowledged").await.unwrap();
    assert!(eventually(WAIT, || async { positions(&nodes[1]).1 == 1 }).await);
    let new_primary = nodes.pop().unwrap();
    let old_primary = nodes.pop().unwrap();
    // The replica is cut off (its node lost); the old primary stores a write it cannot commit.
    new_primary.with_state(|s| s.databases.get_mut("appdb").unwrap().stop_replicator());
    let _ = tokio::time::timeout(
        Duration::from_millis(200),
        writer.set(b"k", b"never acknowledged"),
    )
    .await;
    assert_eq!(positions(&old_primary), (1, 2));

    // Failover: the replica is promoted (async first, so it commits what it holds, then sync).
    let admin_new = session(&new_primary, "appdb").await;
    admin_new
        .apply(
            &update("appdb", ReplicationSettings::default()),
            &Secret::default(),
        )
        .await
        .unwrap();
    let primary_sync = ReplicationSettings {
        sync_replication: true,
        sync_acks: 1,
        ..Default::default()
    };
    admin_new
        .apply(&update("appdb", primary_sync), &Secret::default())
        .await
        .unwrap();
    new_primary.with_state(|s| {
        let db = s.databases.get_mut("appdb").unwrap();
        db.ledger
            .commit(&[(b"k".to_vec(), b"after failover".to_vec())]);
        db.ledger
            .commit(&[(b"k2".to_vec(), b"after failover".to_vec())]);
    });
    // The new primary needs the replication user that the old one had.
    new_primary.with_state(|s| {
        let user = old_primary.with_state(|o| o.users["replicator"].clone());
        s.users.insert("replicator".into(), user);
    });

    // The old primary returns as a sync replica of the new one.
    let replica_of_new = ReplicationSettings {
        replica: true,
        primary_database: "appdb".into(),
        primary_host: new_primary.options.grpc.ip().to_string(),
        primary_port: GRPC_PORT.into(),
        primary_username: "replicator".into(),
        primary_password: Secret::new(REPLICATION_PASSWORD),
        sync_replication: true,
        prefetch_tx_buffer_size: 100,
        replication_commit_concurrency: 10,
        allow_tx_discarding,
        ..Default::default()
    };
    session(&old_primary, "appdb")
        .await
        .apply(&update("appdb", replica_of_new), &Secret::default())
        .await
        .unwrap();
    (old_primary, new_primary)
}

#[tokio::test]
async fn allow_tx_discarding_drops_an_unacknowledged_precommitted_transaction_and_follows() {
    let cluster = Cluster::new();
    let (old, new) = after_failover(&cluster, true).await;
    assert!(
        eventually(WAIT, || async { positions(&old) == (3, 3) }).await,
        "{:?}, {:?}",
        positions(&old),
        old.with_state(|s| s.databases["appdb"].replicator.last_error.clone())
    );
    let same = |id| {
        old.with_state(|s| s.databases["appdb"].ledger.alh(id))
            == new.with_state(|s| s.databases["appdb"].ledger.alh(id))
    };
    assert!(same(1) && same(2) && same(3), "the new primary's history");
    assert_eq!(
        old.with_state(|s| s.databases["appdb"].ledger.get(b"k")),
        Some((2, b"after failover".to_vec()))
    );
}

#[tokio::test]
async fn without_allow_tx_discarding_the_replicator_stops_and_nothing_is_discarded() {
    let cluster = Cluster::new();
    let (old, _new) = after_failover(&cluster, false).await;
    assert!(
        eventually(WAIT, || async {
            !old.with_state(|s| s.databases["appdb"].replicator.running)
        })
        .await
    );
    assert_eq!(
        old.with_state(|s| s.databases["appdb"].replicator.last_error.clone())
            .as_deref(),
        Some("replica precommit state diverged from primary's")
    );
    assert_eq!(positions(&old), (1, 2));
}

#[tokio::test]
async fn a_committed_divergence_is_refused_and_kept() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    let report = converge(&cluster.converge_config(
        &cluster.replica_hosts(1),
        20,
        databases(&["appdb"]),
        &[],
    ))
    .await;
    assert_eq!(report.exit_code(), 0, "{report}");
    // Async: the primary committed a write the replica never received, then the replica was
    // promoted and wrote its own.
    nodes[1].with_state(|s| s.databases.get_mut("appdb").unwrap().stop_replicator());
    nodes[0].with_state(|s| {
        s.databases
            .get_mut("appdb")
            .unwrap()
            .ledger
            .commit(&[(b"k".to_vec(), b"only on the old primary".to_vec())])
    });
    let new = session(&nodes[1], "appdb").await;
    promote_with_only_replica_false(&new, "appdb")
        .await
        .unwrap();
    new.set(b"k", b"on the new primary").await.unwrap();
    nodes[1].with_state(|s| {
        let user = nodes[0].with_state(|o| o.users["replicator"].clone());
        s.users.insert("replicator".into(), user);
    });
    let replica_of_new = |sync| ReplicationSettings {
        replica: true,
        primary_database: "appdb".into(),
        primary_host: cluster.host(1),
        primary_port: GRPC_PORT.into(),
        primary_username: "replicator".into(),
        primary_password: Secret::new(REPLICATION_PASSWORD),
        sync_replication: sync,
        prefetch_tx_buffer_size: 100,
        replication_commit_concurrency: 10,
        allow_tx_discarding: true,
        ..Default::default()
    };
    let old = session(&nodes[0], "appdb").await;
    // As an async replica it keeps trying and fails every transaction.
    old.apply(&update("appdb", replica_of_new(false)), &Secret::default())
        .await
        .unwrap();
    nodes[1].with_state(|s| {
        s.databases
            .get_mut("appdb")
            .unwrap()
            .ledger
            .commit(&[(b"n".to_vec(), b"2".to_vec())])
    });
    let error = || nodes[0].with_state(|s| s.databases["appdb"].replicator.last_error.clone());
    assert!(
        eventually(WAIT, || async {
            error().as_deref() == Some("attempt to commit a tx with invalid blRoot")
        })
        .await,
        "{:?}",
        error()
    );
    assert!(nodes[0].with_state(|s| s.databases["appdb"].replicator.running));
    // As a sync replica of a synchronous primary (only such a primary keeps replica states),
    // the primary refuses its committed state: the replicator stops for good, and
    // allowTxDiscarding does not touch committed transactions.
    new.apply(
        &update("appdb", ReplicationSettings::writable(Some(1))),
        &Secret::default(),
    )
    .await
    .unwrap();
    old.apply(&update("appdb", replica_of_new(true)), &Secret::default())
        .await
        .unwrap();
    assert!(
        eventually(WAIT, || async {
            error().as_deref() == Some("replica commit state diverged from primary's")
        })
        .await,
        "{:?}",
        error()
    );
    assert!(!nodes[0].with_state(|s| s.databases["appdb"].replicator.running));
    assert_eq!(
        nodes[0].with_state(|s| s.databases["appdb"].ledger.get(b"k")),
        Some((1, b"only on the old primary".to_vec()))
    );
}

/// A stopped primary (SIGSTOP, a long GC pause, a frozen VM) as immudb meets it: calls to it
/// wait instead of failing; a synchronous replica's stream to it hangs and stays with it while
/// the write Service routes elsewhere, so the resumed primary gets its writes acknowledged;
/// restarting the replica's replicator (what the agent's wake does) ends the hung stream, and
/// the new one connects through the Service, never to the stopped pod again.
#[tokio::test]
async fn a_replica_stays_connected_to_a_stopped_primary_until_its_replicator_restarts() {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    let routed = Arc::new(Mutex::new(Some(cluster.host(0))));
    let service = routed.clone();
    cluster
        .network
        .alias("write-service", move || service.lock().unwrap().clone());
    let config = cluster.converge_config(
        &cluster.replica_hosts(1),
        20,
        sync_spec(),
        &["--replication-primary-host=write-service"],
    );
    assert_eq!(converge(&config).await.exit_code(), 0);
    let writer = session(&nodes[0], "appdb").await;
    assert_eq!(writer.set(b"k", b"1").await.unwrap(), 1);

    // The primary stops: a call waits rather than fails, and so does its metrics port.
    nodes[0].pause(true);
    let call = tokio::time::timeout(Duration::from_millis(300), writer.get(b"k")).await;
    assert!(call.is_err(), "a stopped server does not answer: {call:?}");
    let metrics = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(nodes[0].options.metrics),
    );
    let mut stream = metrics.await.unwrap().expect("its kernel accepts");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(300), stream.read_to_end(&mut answer));
    assert!(read.await.is_err(), "the metrics port waits too");

    // The Service no longer routes to it; the replica's stream hangs there, counting no failure.
    *routed.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replicator = nodes[1].with_state(|s| s.databases["appdb"].replicator.clone());
    assert!(replicator.running && replicator.hangs(), "{replicator:?}");
    assert_eq!(replicator.failures, 0);

    // It resumes: the replica's stream continues with it and acknowledges a new write.
    nodes[0].pause(false);
    let acknowledged = tokio::time::timeout(WAIT, writer.set(b"k", b"2")).await;
    assert_eq!(
        acknowledged.unwrap().unwrap(),
        2,
        "the old stream acknowledged it"
    );
    assert_eq!(positions(&nodes[1]).1, 2);

    // Stopped again, the replicator restarted while its fetch hangs: the new one connects
    // through the Service (to nobody), so the resumed primary's next write is never acknowledged.
    nodes[0].pause(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let replica = session(&nodes[1], "appdb").await;
    tokio::time::timeout(Duration::from_secs(2), replica.wake_replicator("appdb"))
        .await
        .expect("the restart does not wait for the hung fetch")
        .unwrap();
    nodes[0].pause(false);
    let unacknowledged = tokio::time::timeout(Duration::from_millis(500), writer.set(b"k", b"3"));
    assert!(unacknowledged.await.is_err(), "no replica acknowledges it");
    assert_eq!(positions(&nodes[0]), (2, 3));
    assert_eq!(positions(&nodes[1]).1, 2);
    let replicator = nodes[1].with_state(|s| s.databases["appdb"].replicator.clone());
    assert!(
        !replicator.hangs() && replicator.failures > 0,
        "{replicator:?}"
    );
}

/// What a hand-over of the primary role rests on (immudb 1.11.1 pkg/database/database.go,
/// `ExportTxByID` and `AsReplica`; embedded/store/immustore.go, `ReplicateTx`): once the primary
/// is fenced (a replica, sync kept) its synchronous replica's own fetches are refused, while a
/// committed transaction can still be exported from it and replicated into the replica, which
/// answers once the transaction is precommitted and synced and commits it when promoted.
#[tokio::test]
async fn a_fenced_primary_s_transaction_reaches_its_sync_replica_by_export_and_replicate_only() {
    let cluster = Cluster::new();
    let nodes = sync_pair(&cluster).await;
    let writer = session(&nodes[0], "appdb").await;
    writer.set(b"k", b"1").await.unwrap();
    assert!(eventually(WAIT, || async { positions(&nodes[1]).1 == 1 }).await);
    // The replica's replicator pauses; the primary commits one more on its own (as if another
    // replica had acknowledged it).
    nodes[1].with_state(|s| s.databases.get_mut("appdb").unwrap().stop_replicator());
    nodes[0].with_state(|s| {
        let db = s.databases.get_mut("appdb").unwrap();
        db.ledger.commit(&[(b"k".to_vec(), b"2".to_vec())]);
        db.ledger.allow_commit_up_to(2);
    });
    let fenced = ReplicationSettings {
        replica: true,
        sync_replication: true,
        prefetch_tx_buffer_size: 100,
        replication_commit_concurrency: 10,
        allow_tx_discarding: true,
        ..Default::default()
    };
    writer
        .apply(&update("appdb", fenced), &Secret::default())
        .await
        .unwrap();
    // The replicator runs again and asks the fenced primary: refused.
    nodes[1].with_state(|s| s.databases.get_mut("appdb").unwrap().start_replicator());
    assert!(
        eventually(WAIT, || async {
            nodes[1].with_state(|s| s.databases["appdb"].replicator.last_error.clone())
                == Some(immudb_double::replicator::REPLICA_STATE_NOT_EXPECTED.to_string())
        })
        .await
    );
    assert_eq!(positions(&nodes[1]), (1, 1));

    let exported = writer.export_tx(2).await.unwrap();
    let replica = session(&nodes[1], "appdb").await;
    let header = tokio::time::timeout(Duration::from_secs(2), replica.replicate_tx(&exported))
        .await
        .expect("a synchronous replica answers once the transaction is precommitted")
        .unwrap();
    assert_eq!(header.id, 2);
    assert_eq!(positions(&nodes[1]), (1, 2), "precommitted, not committed");
    replica
        .apply(
            &update("appdb", ReplicationSettings::writable(None)),
            &Secret::default(),
        )
        .await
        .unwrap();
    assert_eq!(positions(&nodes[1]), (2, 2), "promotion commits it");
    assert_eq!(replica.get(b"k").await.unwrap(), b"2");
}

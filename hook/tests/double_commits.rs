//! The double commits as immudb's store does: a value that does not hash to its header's eH is
//! refused by replicateTx, concurrent replicateTx calls commit in order within maxConcurrency
//! slots and the maxActiveTransactions window, and every commit pending when the syncer syncs
//! completes with that one sync.

mod common;

use common::*;
use immudb_double::commits::{MAX_ACTIVE_EXCEEDED, MAX_CONCURRENCY_EXCEEDED};
use immudb_double::{Database, Ledger, Node};
use immudb_hook::client::Client;
use immudb_hook::types::{Credentials, Secret};
use tonic::Code;

/// A source history of `count` one-entry transactions.
fn source(count: usize) -> Ledger {
    let mut ledger = Ledger::default();
    for i in 0..count {
        ledger.commit(&[(format!("k{i}").into_bytes(), vec![i as u8; 32])]);
    }
    ledger
}

fn message(ledger: &Ledger, id: u64) -> Vec<u8> {
    ledger.transaction(id).unwrap().to_message()
}

/// An empty database in the external-replica form that replicateTx writes into.
fn replica_target(node: &Node, name: &str, sync_frequency_ms: i64, max_concurrency: u32) {
    node.with_state(|s| {
        let mut db = Database::loaded();
        db.replication.replica = true;
        db.settings.sync_frequency_ms = sync_frequency_ms;
        db.settings.max_concurrency = max_concurrency;
        db.effective = db.settings.clone();
        s.databases.insert(name.into(), db);
    });
}

async fn session(node: &Node, database: &str) -> Client {
    let admin = Credentials {
        user: "immudb".into(),
        password: Secret::new(ADMIN_PASSWORD),
    };
    Client::new(&target(node))
        .unwrap()
        .open_session(&admin, database)
        .await
        .unwrap()
}

fn commits<T>(node: &Node, db: &str, f: impl FnOnce(&Database) -> T) -> T {
    node.with_state(|s| f(&s.databases[db]))
}

/// replicateTx of transaction `id` of `history`, in a task of its own.
fn spawn_replicate(
    client: &Client,
    history: &Ledger,
    id: u64,
) -> tokio::task::JoinHandle<Result<immudb_txlog::TxHeader, immudb_hook::client::RpcError>> {
    let (client, message) = (client.clone(), message(history, id));
    tokio::spawn(async move { client.replicate_tx(&message).await })
}

/// Whether `appdb` on `node` comes to have `slots` transaction slots taken.
async fn slots_taken(node: &Node, slots: u32) -> bool {
    eventually(SHORT, || async {
        commits(node, "appdb", |db| db.commits.slots_taken()) == slots
    })
    .await
}

#[tokio::test]
async fn a_value_that_does_not_hash_to_eh_is_refused() {
    let cluster = Cluster::new();
    let node = cluster.start_node(0).await;
    replica_target(&node, "appdb", 20, 30);
    let client = session(&node, "appdb").await;
    let history = source(1);
    let mut tampered = message(&history, 1);
    let last = tampered.len() - 4;
    tampered[last] ^= 0x01;
    let err = client.replicate_tx(&tampered).await.unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            Code::Unknown,
            "illegal arguments: entries hash (Eh) differs"
        )
    );
    assert_eq!(commits(&node, "appdb", |db| db.ledger.precommitted_id()), 0);
    let header = client.replicate_tx(&message(&history, 1)).await.unwrap();
    assert_eq!(header.alh(), history.state().1);
}

#[tokio::test]
async fn concurrent_calls_commit_in_order() {
    let cluster = Cluster::new();
    let node = cluster.start_node(0).await;
    replica_target(&node, "appdb", 20, 30);
    let client = session(&node, "appdb").await;
    let history = source(3);
    let later: Vec<_> = [3, 2]
        .into_iter()
        .map(|id| spawn_replicate(&client, &history, id))
        .collect();
    // Both wait for their predecessor, each holding a transaction slot; nothing is precommitted.
    assert!(slots_taken(&node, 2).await);
    assert_eq!(commits(&node, "appdb", |db| db.ledger.precommitted_id()), 0);
    client.replicate_tx(&message(&history, 1)).await.unwrap();
    for call in later {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        commits(&node, "appdb", |db| db.ledger.state()),
        history.state()
    );
    assert_eq!(commits(&node, "appdb", |db| db.commits.slots_taken()), 0);
}

#[tokio::test]
async fn beyond_max_concurrency_or_its_window_a_call_is_refused() {
    let cluster = Cluster::new();
    let node = cluster.start_node(0).await;
    replica_target(&node, "appdb", 20, 2);
    let client = session(&node, "appdb").await;
    let history = source(3);
    // Tx 3 is more than maxConcurrency (2) ahead of the last precommitted transaction (none).
    let err = client
        .replicate_tx(&message(&history, 3))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (Code::Unknown, MAX_ACTIVE_EXCEEDED)
    );
    // Two calls for tx 2 wait for tx 1, each holding one of the 2 transaction slots.
    let waiting: Vec<_> = (0..2)
        .map(|_| spawn_replicate(&client, &history, 2))
        .collect();
    assert!(slots_taken(&node, 2).await);
    // Every slot is taken: any further call is refused, even the one the others wait for.
    let err = client
        .replicate_tx(&message(&history, 1))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (Code::Unknown, MAX_CONCURRENCY_EXCEEDED)
    );
    // Calls the client gives up on give their slots back.
    for call in waiting {
        call.abort();
    }
    assert!(slots_taken(&node, 0).await);
    for id in 1..=3 {
        client.replicate_tx(&message(&history, id)).await.unwrap();
    }
    assert_eq!(
        commits(&node, "appdb", |db| db.ledger.state()),
        history.state()
    );
    let err = client
        .replicate_tx(&message(&history, 3))
        .await
        .unwrap_err();
    assert_eq!(err.message, "tx already committed");
}

#[tokio::test]
async fn commits_pending_at_a_sync_complete_together() {
    let cluster = Cluster::new();
    let node = cluster.start_node(0).await;
    // A long syncFrequency leaves no doubt about which calls were pending at a sync.
    replica_target(&node, "one_by_one", 200, 30);
    replica_target(&node, "pipelined", 200, 30);
    let history = source(8);

    let client = session(&node, "one_by_one").await;
    for id in 1..=8 {
        client.replicate_tx(&message(&history, id)).await.unwrap();
    }
    assert_eq!(commits(&node, "one_by_one", |db| db.commits.syncs()), 8);

    let client = session(&node, "pipelined").await;
    let calls: Vec<_> = (1..=8)
        .map(|id| spawn_replicate(&client, &history, id))
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let syncs = commits(&node, "pipelined", |db| db.commits.syncs());
    assert!(syncs < 8, "8 concurrent commits took {syncs} syncs");
    assert_eq!(
        commits(&node, "pipelined", |db| db.ledger.state()),
        history.state()
    );
}

#[tokio::test]
async fn a_write_returns_once_synced_and_concurrent_writes_share_a_sync() {
    let cluster = Cluster::new();
    let node = cluster.start_node(0).await;
    node.with_state(|s| {
        let mut db = Database::loaded();
        db.settings.sync_frequency_ms = 200;
        db.effective = db.settings.clone();
        s.databases.insert("appdb".into(), db);
    });
    let client = session(&node, "appdb").await;
    let id = client.set(b"k", b"v").await.unwrap();
    // Set answers only after the sync: the transaction is already committed.
    assert_eq!(client.current_state().await.unwrap().tx_id, id);
    assert_eq!(commits(&node, "appdb", |db| db.commits.syncs()), 1);
    let writes: Vec<_> = (0..6u8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.set(&[i], b"v").await })
        })
        .collect();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    let syncs = commits(&node, "appdb", |db| db.commits.syncs());
    assert!(syncs < 7, "6 concurrent writes took {} syncs", syncs - 1);
    assert_eq!(client.current_state().await.unwrap().tx_id, 7);
}

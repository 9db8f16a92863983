//! The double must answer like immudb: these checks pin the rules the hook relies on.

mod common;

use common::*;
use immudb_hook::client::Client;
use immudb_hook::plan::{Action, ReplicationSettings, StorageSettings};
use immudb_hook::proto::immu_service_client::ImmuServiceClient;
use immudb_hook::proto::DatabaseListRequestV2;
use immudb_hook::types::Secret;
use tonic::Code;

/// An admin session on `node`'s defaultdb.
async fn admin_session(node: &immudb_double::Node) -> Client {
    Client::new(&target(node))
        .unwrap()
        .open_session(&admin(), "defaultdb")
        .await
        .unwrap()
}

#[tokio::test]
async fn sessions_belong_to_one_server() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    let primary = admin_session(&nodes[0]).await;
    let Err(err) = Client::new(&target(&nodes[1]))
        .unwrap()
        .open_session(&admin(), "")
        .await
    else {
        panic!("an empty database name must be refused")
    };
    assert_eq!(
        (err.code, err.message.as_str()),
        (Code::Unknown, "database does not exist")
    );
    // A session id from another server is unknown here.
    let mut raw = ImmuServiceClient::connect(format!("http://{}", nodes[1].options.grpc))
        .await
        .unwrap();
    let mut request = tonic::Request::new(DatabaseListRequestV2 {});
    request
        .metadata_mut()
        .insert("sessionid", "f00d".parse().unwrap());
    let status = raw.database_list_v2(request).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::PermissionDenied, "session not found")
    );
    primary.close_session().await.unwrap();
    let err = primary.list_databases().await.unwrap_err();
    assert_eq!(err.message, "session not found");
}

#[tokio::test]
async fn server_rules_and_texts() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 0).await;
    let c = admin_session(&nodes[0]).await;
    let none = Secret::default();
    let create = |name: &str, replication: ReplicationSettings| Action::CreateDatabase {
        name: name.into(),
        replication,
        storage: StorageSettings::default(),
    };

    let err = c
        .apply(&create("defaultdb", Default::default()), &none)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (Code::Internal, "database is reserved")
    );
    let err = c
        .apply(&create("a-b", Default::default()), &none)
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "punctuation marks and symbols are not allowed in database name"
    );
    let sync_without_acks = ReplicationSettings {
        sync_replication: true,
        ..Default::default()
    };
    let err = c
        .apply(&create("x", sync_without_acks), &none)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(err.message.starts_with("illegal arguments: rpc error: code = InvalidArgument desc = illegal arguments: invalid replication options for primary database 'x'"));

    c.apply(&create("MyDb", Default::default()), &none)
        .await
        .unwrap();
    let names: Vec<String> = c
        .list_databases()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert!(
        names.contains(&"mydb".to_string()),
        "upper case folds: {names:?}"
    );
    // ifNotExists on an existing database changes nothing.
    let acks = ReplicationSettings {
        sync_replication: true,
        sync_acks: 1,
        ..Default::default()
    };
    c.apply(&create("mydb", acks), &none).await.unwrap();
    let mydb = c
        .list_databases()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == "mydb")
        .unwrap();
    assert!(!mydb.replication.sync_replication);

    let user = |permission| Action::CreateUser {
        user: "u".into(),
        database: "mydb".into(),
        permission,
    };
    for (permission, text) in [
        (0, "unrecognized permission"),
        (3, "unrecognized permission"),
        (255, "can not create another system admin"),
    ] {
        let err = c
            .apply(&user(permission), &Secret::new("p"))
            .await
            .unwrap_err();
        assert_eq!(err.message, text);
    }
    c.apply(&user(254), &Secret::new("p")).await.unwrap();
    let err = c.apply(&user(254), &Secret::new("p")).await.unwrap_err();
    assert_eq!(err.message, "user already exists");
}

#[tokio::test]
async fn replica_databases_are_read_only() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 0).await;
    let c = admin_session(&nodes[0]).await;
    // Every replica needs a prefetch buffer and a commit concurrency (the hook sends every
    // field, so immudb's defaults for unset ones do not apply).
    let replica = ReplicationSettings {
        replica: true,
        primary_database: "r".into(),
        prefetch_tx_buffer_size: 100,
        replication_commit_concurrency: 10,
        ..Default::default()
    };
    c.apply(
        &Action::CreateDatabase {
            name: "r".into(),
            replication: replica,
            storage: StorageSettings::default(),
        },
        &Secret::default(),
    )
    .await
    .unwrap();
    let on_r = Client::new(&target(&nodes[0]))
        .unwrap()
        .open_session(&admin(), "r")
        .await
        .unwrap();
    let err = on_r.set(b"k", b"v").await.unwrap_err();
    assert_eq!(err.message, "database is read-only because it's a replica");
    let listed = c
        .list_databases()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == "r")
        .unwrap();
    assert!(listed.replication.replica && listed.replication.primary_database == "r");
}

#[tokio::test]
async fn unload_and_load_answer_like_immudb() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 0).await;
    let admin_client = admin_session(&nodes[0]).await;
    let create = Action::CreateDatabase {
        name: "appdb".into(),
        replication: ReplicationSettings::default(),
        storage: StorageSettings::default(),
    };
    admin_client
        .apply(&create, &Secret::default())
        .await
        .unwrap();
    let on_appdb = Client::new(&target(&nodes[0]))
        .unwrap()
        .open_session(&admin(), "appdb")
        .await
        .unwrap();
    admin_client.reload_database("appdb").await.unwrap();
    admin_client.unload_database("appdb").await.unwrap();
    let err = admin_client.unload_database("appdb").await.unwrap_err();
    assert_eq!(err.message, "already closed");
    let err = on_appdb.get(b"k").await.unwrap_err();
    assert_eq!(
        err.message, "already closed",
        "a closed database serves nothing"
    );
    admin_client.load_database("appdb").await.unwrap();
    let err = admin_client.load_database("appdb").await.unwrap_err();
    assert_eq!(err.message, "database already loaded");
    let err = admin_client.reload_database("defaultdb").await.unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (Code::Internal, "database is reserved")
    );
}

/// A raw client carrying `session`'s id, for the calls the hook's client does not wrap.
fn with_session<T>(session: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("sessionid", session.parse().unwrap());
    request
}

async fn raw_session(node: &immudb_double::Node, user: &str, password: &str, db: &str) -> String {
    let mut raw = ImmuServiceClient::connect(format!("http://{}", node.options.grpc))
        .await
        .unwrap();
    raw.open_session(immudb_hook::proto::OpenSessionRequest {
        username: user.as_bytes().to_vec(),
        password: password.as_bytes().to_vec(),
        database_name: db.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .session_id
}

#[tokio::test]
async fn replicas_replicate_transaction_by_transaction_and_export_needs_admin() {
    use immudb_hook::proto::{ExportTxRequest, TxRequest};
    use immudb_txlog::{ExportedTx, TxHeader};
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    let report = converge_databases(&cluster, &cluster.replica_hosts(1), &["appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let writer = Client::new(&target(&nodes[0]))
        .unwrap()
        .open_session(&admin(), "appdb")
        .await
        .unwrap();
    for i in 0..3u8 {
        writer.set(&[i], &[i; 100]).await.unwrap();
    }
    let primary_state = nodes[0].with_state(|s| s.databases["appdb"].ledger.state());
    assert_eq!(primary_state.0, 3);
    for _ in 0..100 {
        if nodes[1].with_state(|s| s.databases["appdb"].ledger.state()) == primary_state {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    nodes[1].with_state(|s| {
        let (replica, primary) = (&s.databases["appdb"].ledger, primary_state);
        assert_eq!(replica.state(), primary, "same last id and Alh");
    });

    let mut raw = ImmuServiceClient::connect(format!("http://{}", nodes[0].options.grpc))
        .await
        .unwrap();
    let session = raw_session(&nodes[0], "immudb", ADMIN_PASSWORD, "appdb").await;
    let state = raw
        .current_state(with_session(&session, ()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (state.tx_id, state.tx_hash.as_slice()),
        (3, &primary_state.1[..])
    );
    let header = raw
        .tx_by_id(with_session(&session, TxRequest { tx: 3 }))
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap();
    let mut stream = raw
        .export_tx(with_session(
            &session,
            ExportTxRequest {
                tx: 3,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut message = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        message.extend_from_slice(&chunk.content);
    }
    let exported = ExportedTx::from_message(&message).unwrap();
    let from_tx_by_id = TxHeader {
        id: header.id,
        prev_alh: header.prev_alh.try_into().unwrap(),
        ts: header.ts,
        version: header.version as u16,
        metadata: Default::default(),
        nentries: header.nentries as u32,
        eh: header.e_h.try_into().unwrap(),
        bl_tx_id: header.bl_tx_id,
        bl_root: header.bl_root.try_into().unwrap(),
    };
    assert_eq!(exported.header, from_tx_by_id);
    assert_eq!(from_tx_by_id.alh(), primary_state.1);

    // A user with Read reads the state but may not export.
    admin_session(&nodes[0])
        .await
        .apply(
            &Action::CreateUser {
                user: "reader".into(),
                database: "appdb".into(),
                permission: 1,
            },
            &Secret::new("reader-pw"),
        )
        .await
        .unwrap();
    let reader = raw_session(&nodes[0], "reader", "reader-pw", "appdb").await;
    raw.current_state(with_session(&reader, ())).await.unwrap();
    let status = raw
        .export_tx(with_session(
            &reader,
            ExportTxRequest {
                tx: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Internal, "permission denied")
    );
}

#[tokio::test]
async fn a_commit_concurrency_above_max_concurrency_is_accepted_then_fails_every_transaction() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    let report = converge_databases(&cluster, &cluster.replica_hosts(1), &["appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    // What the hook refuses to send, sent by hand: immudb accepts it.
    let replica = admin_session(&nodes[1]).await;
    let settings = nodes[1].with_state(|s| s.databases["appdb"].replication.clone());
    let update = Action::UpdateDatabase {
        name: "appdb".into(),
        replication: Some(ReplicationSettings {
            replica: true,
            primary_database: settings.primary_database,
            primary_host: settings.primary_host,
            primary_port: settings.primary_port,
            primary_username: settings.primary_username,
            primary_password: Secret::new(settings.primary_password),
            prefetch_tx_buffer_size: settings.prefetch_tx_buffer_size,
            replication_commit_concurrency: 40,
            ..Default::default()
        }),
        storage: StorageSettings::default(),
    };
    replica.apply(&update, &Secret::default()).await.unwrap();
    nodes[0].with_state(|s| {
        let db = s.databases.get_mut("appdb").unwrap();
        db.ledger.commit(&[(b"k".to_vec(), b"v".to_vec())]);
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    nodes[1].with_state(|s| {
        let db = &s.databases["appdb"];
        assert_eq!(db.tx_count(), 0, "nothing replicates");
        assert!(
            db.replicator.running,
            "the replicator runs (its gauge says 40)"
        );
        assert_eq!(
            db.replicator.last_error.as_deref(),
            Some("max concurrency limit exceeded")
        );
    });
}

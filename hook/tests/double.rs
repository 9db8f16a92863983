//! The double must answer like immudb: these checks pin the rules the hook relies on.

mod common;

use common::*;
use immudb_hook::client::Client;
use immudb_hook::config::{Credentials, Secret};
use immudb_hook::plan::{Action, ReplicationSettings, StorageSettings};
use immudb_hook::proto::immu_service_client::ImmuServiceClient;
use immudb_hook::proto::DatabaseListRequestV2;
use tonic::Code;

fn admin() -> Credentials {
    Credentials {
        user: "immudb".into(),
        password: Secret::new(ADMIN_PASSWORD),
    }
}

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
    let replica = ReplicationSettings {
        replica: true,
        primary_database: "r".into(),
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

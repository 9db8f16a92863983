//! The built binary's `backup`, `restore` and `rebuild-primary`: S3 against a real S3-protocol
//! server started here on loopback (s3s-fs, in process), bad input mapped to the documented exit
//! codes with nothing written, and no secret ever printed.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};

use common::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use immudb_double::Node;
use tokio::net::TcpListener;
use tokio::process::Command;

const ACCESS_KEY: &str = "backup-access-key";
const SECRET_KEY: &str = "backup-Secret-Key-3";

/// An S3 server over a directory (each bucket a subdirectory), checking SigV4 signatures.
async fn start_s3(root: &Path) -> SocketAddr {
    let filesystem = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(filesystem);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    address
}

fn hook(cluster: &Cluster, subcommand: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_immudb-hook"));
    command
        .env("IMMUDB_HOOK_PRIMARY_HOST", cluster.host(0))
        .env("IMMUDB_HOOK_ADMIN_PASSWORD_FILE", cluster.path("admin"))
        .env("IMMUDB_HOOK_HOSTS_FILE", cluster.path("hosts"))
        .env("IMMUDB_HOOK_RESOLV_CONF", cluster.path("resolv.conf"))
        .env("IMMUDB_HOOK_TIMEOUT_SECONDS", "5")
        .env("IMMUDB_HOOK_DATABASES", "appdb")
        .env("IMMUDB_HOOK_LOG", "debug")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .arg(subcommand)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn s3_env(command: &mut Command, cluster: &Cluster, endpoint: SocketAddr, bucket: &str) {
    std::fs::write(cluster.path("s3-id"), ACCESS_KEY).unwrap();
    std::fs::write(cluster.path("s3-secret"), format!("{SECRET_KEY}\n")).unwrap();
    command
        .env("IMMUDB_HOOK_S3_ENDPOINT", format!("http://{endpoint}"))
        .env("IMMUDB_HOOK_S3_BUCKET", bucket)
        .env("IMMUDB_HOOK_S3_PATH_STYLE", "true")
        .env("IMMUDB_HOOK_S3_ACCESS_KEY_ID_FILE", cluster.path("s3-id"))
        .env(
            "IMMUDB_HOOK_S3_SECRET_ACCESS_KEY_FILE",
            cluster.path("s3-secret"),
        )
        .env("IMMUDB_HOOK_BACKUP_PREFIX", "nightly/cluster-a");
}

/// Runs the command; asserts no secret appears in its output. Returns (exit code, stdout + stderr).
async fn run(command: &mut Command) -> (i32, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().await.unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    for secret in [ADMIN_PASSWORD, SECRET_KEY, ACCESS_KEY] {
        assert!(!text.contains(secret), "a secret leaked:\n{text}");
    }
    (status.code().unwrap_or(-1), text)
}

async fn primary_with_appdb(cluster: &Cluster, transactions: u8) -> Node {
    let node = cluster.start_node(0).await;
    node.with_state(|s| {
        let mut db = immudb_double::Database::loaded();
        for i in 0..transactions {
            db.ledger.commit(&[(vec![i], vec![i; 64])]);
        }
        s.databases.insert("appdb".into(), db);
    });
    node
}

fn tree(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir(root);
    out.sort();
    out
}

fn walkdir(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                let mut below = walkdir(&path);
                below.push(path.display().to_string());
                below
            } else {
                vec![path.display().to_string()]
            }
        })
        .collect()
}

#[tokio::test]
async fn s3_backup_and_restore_through_a_real_s3_server() {
    let cluster = Cluster::new();
    let source = primary_with_appdb(&cluster, 12).await;
    let root = cluster.dir.path().join("s3");
    std::fs::create_dir_all(root.join("backups")).unwrap();
    let endpoint = start_s3(&root).await;

    let mut backup = hook(&cluster, "backup");
    s3_env(&mut backup, &cluster, endpoint, "backups");
    let (code, text) = run(&mut backup).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("backed up tx 1..12"), "{text}");
    let stored = tree(&root.join("backups/nightly/cluster-a/appdb"));
    assert!(
        stored
            .iter()
            .any(|f| f.ends_with("-00000000000000000012.immubackup")),
        "{stored:?}"
    );
    assert!(
        stored.iter().any(|f| f.ends_with(".manifest.json")),
        "{stored:?}"
    );
    source.with_state(|s| {
        s.databases
            .get_mut("appdb")
            .unwrap()
            .ledger
            .commit(&[(b"late".to_vec(), b"x".to_vec())])
    });
    let mut incremental = hook(&cluster, "backup");
    s3_env(&mut incremental, &cluster, endpoint, "backups");
    let (code, text) = run(&mut incremental).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("backed up tx 13..13"), "{text}");

    let target = Cluster::new();
    let restored = target.start_node(0).await;
    let mut restore = hook(&target, "restore");
    s3_env(&mut restore, &target, endpoint, "backups");
    let (code, text) = run(&mut restore).await;
    assert_eq!(code, 0, "{text}");
    let state = |node: &Node| node.with_state(|s| s.databases["appdb"].ledger.state());
    assert_eq!(state(&restored), state(&source));
}

#[tokio::test]
async fn s3_failures_exit_7_and_write_nothing() {
    let cluster = Cluster::new();
    let _source = primary_with_appdb(&cluster, 3).await;
    let root = cluster.dir.path().join("s3");
    std::fs::create_dir_all(root.join("backups")).unwrap();
    let endpoint = start_s3(&root).await;
    let before = tree(&root);

    let mut missing_bucket = hook(&cluster, "backup");
    s3_env(&mut missing_bucket, &cluster, endpoint, "no-such-bucket");
    let (code, text) = run(&mut missing_bucket).await;
    assert_eq!(code, 7, "{text}");
    assert!(text.contains("s3://no-such-bucket"), "{text}");

    let mut wrong_key = hook(&cluster, "backup");
    s3_env(&mut wrong_key, &cluster, endpoint, "backups");
    std::fs::write(cluster.path("s3-secret"), "not-the-secret").unwrap();
    wrong_key.env(
        "IMMUDB_HOOK_S3_SECRET_ACCESS_KEY_FILE",
        cluster.path("s3-secret"),
    );
    let (code, text) = run(&mut wrong_key).await;
    assert_eq!(code, 7, "{text}");
    assert_eq!(tree(&root), before, "nothing written");
}

#[tokio::test]
async fn bad_input_exits_with_the_documented_codes_and_writes_nothing() {
    let cluster = Cluster::new();
    let _primary = primary_with_appdb(&cluster, 2).await;
    let dir = cluster.dir.path().join("backups");
    std::fs::create_dir_all(&dir).unwrap();
    let dir_env = dir.display().to_string();

    // No destination: a configuration error, before any server or storage is touched.
    let (code, text) = run(&mut hook(&cluster, "backup")).await;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("--dir") && text.contains("--s3-bucket"),
        "{text}"
    );
    // A destination directory that does not exist.
    let (code, text) =
        run(hook(&cluster, "backup").env("IMMUDB_HOOK_BACKUP_DIR", cluster.path("missing"))).await;
    assert_eq!(code, 7, "{text}");
    assert!(
        text.contains(&format!("directory {}", cluster.path("missing"))),
        "{text}"
    );
    // An unknown database and a wrong password: the server refuses.
    let (code, text) = run(hook(&cluster, "backup")
        .env("IMMUDB_HOOK_BACKUP_DIR", &dir_env)
        .env("IMMUDB_HOOK_DATABASES", "nodb"))
    .await;
    assert_eq!(code, 5, "{text}");
    assert!(text.contains("database does not exist"), "{text}");
    std::fs::write(cluster.path("wrong"), "wrong-password").unwrap();
    let (code, text) = run(hook(&cluster, "backup")
        .env("IMMUDB_HOOK_BACKUP_DIR", &dir_env)
        .env("IMMUDB_HOOK_ADMIN_PASSWORD_FILE", cluster.path("wrong")))
    .await;
    assert_eq!(code, 5, "{text}");
    assert!(text.contains("invalid user name or password"), "{text}");
    assert!(tree(&dir).is_empty(), "nothing written: {:?}", tree(&dir));
    // Nothing to restore from.
    let (code, text) = run(hook(&cluster, "restore").env("IMMUDB_HOOK_BACKUP_DIR", &dir_env)).await;
    assert_eq!(code, 7, "{text}");
    assert!(
        text.contains("holds no backup of database 'appdb'"),
        "{text}"
    );
    // Restore flags that cannot go together.
    let (code, text) = run(hook(&cluster, "restore")
        .env("IMMUDB_HOOK_BACKUP_DIR", &dir_env)
        .env("IMMUDB_HOOK_DATABASES", "a,b")
        .env("IMMUDB_HOOK_RESTORE_UP_TO_TX", "3"))
    .await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--up-to-tx"), "{text}");
    // rebuild-primary needs replicas to copy from.
    let (code, text) = run(&mut hook(&cluster, "rebuild-primary")).await;
    assert_eq!(code, 2, "{text}");
    // The same command with a working source and destination succeeds: the failures above were the input.
    let (code, text) = run(hook(&cluster, "backup")
        .env("IMMUDB_HOOK_BACKUP_DIR", &dir_env)
        .env("IMMUDB_HOOK_BACKUP_SOURCE", "primary"))
    .await;
    assert_eq!(code, 0, "{text}");
    let result = text.lines().find(|l| l.starts_with("result: ")).unwrap();
    assert_eq!(result, "result: done, 1 database(s)");
}

#[tokio::test]
async fn verify_only_needs_no_server_and_exits_8_on_a_tampered_value() {
    let cluster = Cluster::new();
    let _primary = primary_with_appdb(&cluster, 4).await;
    let dir = cluster.dir.path().join("backups");
    std::fs::create_dir_all(&dir).unwrap();
    let dir_env = dir.display().to_string();
    let (code, text) = run(hook(&cluster, "backup")
        .env("IMMUDB_HOOK_BACKUP_DIR", &dir_env)
        .env("IMMUDB_HOOK_BACKUP_SOURCE", "primary"))
    .await;
    assert_eq!(code, 0, "{text}");

    // No server address and no password: an auditor's machine with only the backup.
    let audit = || {
        let mut command = hook(&cluster, "restore");
        command
            .env_remove("IMMUDB_HOOK_PRIMARY_HOST")
            .env_remove("IMMUDB_HOOK_ADMIN_PASSWORD_FILE")
            .env("IMMUDB_HOOK_BACKUP_DIR", &dir_env)
            .arg("--verify-only");
        command
    };
    let (code, text) = run(&mut audit()).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("verified chain "), "{text}");
    assert!(
        text.contains("4 records, 4 entries hashed to their eH"),
        "{text}"
    );

    let object = common::backups::tamper(&dir);
    let (code, text) = run(&mut audit()).await;
    assert_eq!(code, 8, "{text}");
    assert!(
        text.contains(&object) && text.contains("entry 0 at byte"),
        "{text}"
    );

    // A restore proper does need the server.
    let (code, text) = run(hook(&cluster, "restore")
        .env_remove("IMMUDB_HOOK_PRIMARY_HOST")
        .env("IMMUDB_HOOK_BACKUP_DIR", &dir_env))
    .await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--primary-host"), "{text}");
}

//! `backup`, `restore` and `rebuild-primary` against the immudb double: round trips with
//! incremental runs, an interrupted run, corrupted and foreign files, gaps, refused targets,
//! restores up to a transaction, a primary rebuilt from its most advanced replica, and the real
//! immuadmin file restored.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use immudb_double::{Database, Node};
use immudb_hook::backup::catalog::{self, Manifest};
use immudb_hook::backup::{rebuild, restore, run};
use immudb_hook::config::Command;
use immudb_hook::report::{Outcome, Report};
use immudb_txlog::{hex, Chain, Hash, RecordReader};
use sha2::{Digest, Sha256};

fn backup_report_of(
    cluster: &Cluster,
    replicas: &[String],
    extra: &[&str],
) -> impl std::future::Future<Output = Report> {
    let cli = cluster.cli(replicas, 10, "backup", extra);
    async move {
        let Command::Backup(args) = &cli.command else {
            unreachable!()
        };
        run::backup(&args.config(&cli.topology).expect("valid backup config")).await
    }
}

async fn restore_into(target: &Cluster, extra: &[&str]) -> Report {
    let cli = target.cli(&[], 10, "restore", extra);
    let Command::Restore(args) = &cli.command else {
        unreachable!()
    };
    restore::restore(&args.config(&cli.topology).expect("valid restore config")).await
}

fn completed(report: &Report) -> Vec<String> {
    report
        .lines
        .iter()
        .map(|l| match &l.outcome {
            Outcome::Completed(what) => what.clone(),
            other => panic!("{}: {other}\n{report}", l.host),
        })
        .collect()
}

fn failure(report: &Report) -> String {
    match &report.lines[0].outcome {
        Outcome::Failed { reason, .. } => reason.clone(),
        other => panic!("expected a failure, got {other}"),
    }
}

/// A primary with `appdb` holding `count` transactions, and `replicas` replicas converged on it.
async fn seeded(cluster: &Cluster, replicas: u8, count: u8) -> Vec<Node> {
    let nodes = start_all(cluster, replicas).await;
    let report = immudb_hook::reconcile::converge(&cluster.converge_config(
        &cluster.replica_hosts(replicas),
        20,
        &["--databases=appdb"],
    ))
    .await;
    assert_eq!(report.exit_code(), 0, "{report}");
    write(&nodes[0], 0, count);
    for replica in &nodes[1..] {
        caught_up(&nodes[0], replica).await;
    }
    nodes
}

/// Writes transactions `from..from+count`, each one key `k<i>` with a value of 200 bytes.
fn write(node: &Node, from: u8, count: u8) {
    node.with_state(|s| {
        let db = s.databases.get_mut("appdb").unwrap();
        for i in from..from + count {
            db.ledger
                .commit(&[(format!("k{i}").into_bytes(), vec![i; 200])]);
        }
    });
}

fn state_of(node: &Node, db: &str) -> (u64, Hash) {
    node.with_state(|s| s.databases[db].ledger.state())
}

async fn caught_up(primary: &Node, replica: &Node) {
    for _ in 0..200 {
        if state_of(primary, "appdb") == state_of(replica, "appdb") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the replica did not catch up");
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn backup_dir(cluster: &Cluster) -> PathBuf {
    let dir = cluster.dir.path().join("backups");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn dir_flag(dir: &Path) -> String {
    format!("--dir={}", dir.display())
}

/// Reads the objects of `database`'s newest chain as one hot-backup file and verifies it.
async fn verified_records(dir: &Path, database: &str) -> u64 {
    let mut objects: Vec<String> = files(dir)
        .into_iter()
        .filter(|f| f.starts_with(&format!("{database}/")) && f.ends_with(".immubackup"))
        .collect();
    objects.sort();
    let concatenated: Vec<u8> = objects
        .iter()
        .flat_map(|o| std::fs::read(dir.join(o)).unwrap())
        .collect();
    let mut reader = RecordReader::new(&concatenated[..]);
    let mut chain = Chain::genesis();
    while let Some(record) = reader.next().await.unwrap() {
        chain.verify(&record).unwrap();
    }
    chain.last_id
}

#[tokio::test]
async fn incremental_backups_restore_to_the_source_state() {
    let cluster = Cluster::new();
    let nodes = seeded(&cluster, 1, 5).await;
    let dir = backup_dir(&cluster);
    let replicas = cluster.replica_hosts(1);

    let first =
        backup_report_of(&cluster, &replicas, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(first.exit_code(), 0, "{first}");
    assert!(
        completed(&first)[0].starts_with("backed up tx 1..5 "),
        "{first}"
    );
    assert_eq!(
        first.lines[0].host,
        cluster.host(1),
        "a replica is the default source"
    );
    write(&nodes[0], 5, 3);
    caught_up(&nodes[0], &nodes[1]).await;
    let second =
        backup_report_of(&cluster, &replicas, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert!(
        completed(&second)[0].starts_with("backed up tx 6..8 "),
        "{second}"
    );
    let third =
        backup_report_of(&cluster, &replicas, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert!(
        completed(&third)[0].starts_with("up to date at tx 8"),
        "{third}"
    );
    let listed = files(&dir);
    assert_eq!(
        listed.len(),
        4,
        "two objects and their manifests: {listed:?}"
    );
    assert_eq!(
        verified_records(&dir, "appdb").await,
        8,
        "the objects concatenate into one hot-backup file"
    );

    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(
            dir.join(
                listed
                    .iter()
                    .find(|f| f.ends_with(".manifest.json"))
                    .unwrap(),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            manifest.database.as_str(),
            manifest.first_tx,
            manifest.last_tx
        ),
        ("appdb", 1, 5)
    );
    assert_eq!(manifest.immudb_version, "1.11.1");
    assert_eq!(
        manifest.bytes,
        std::fs::metadata(dir.join(&manifest.object)).unwrap().len()
    );

    let target = Cluster::new();
    let _new_primary = target.start_node(0).await;
    let restored = restore_into(&target, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(restored.exit_code(), 0, "{restored}");
    assert!(
        completed(&restored)[0].contains("CurrentState txId 8"),
        "{restored}"
    );
    assert_eq!(
        state_of(&_new_primary, "appdb"),
        state_of(&nodes[0], "appdb")
    );
    _new_primary.with_state(|s| {
        let db = &s.databases["appdb"];
        assert!(!db.replication.replica, "the restored database is writable");
        assert_eq!(db.ledger.get(b"k7"), Some((8, vec![7; 200])));
    });
}

#[tokio::test]
async fn the_real_immuadmin_file_restores_into_the_double() {
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../txlog/tests/fixtures/immudb-1.10.0");
    let bytes = std::fs::read(fixture.join("fixturedb.immubackup")).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("fixturedb.json")).unwrap()).unwrap();
    let cluster = Cluster::new();
    let dir = backup_dir(&cluster);
    let chain_id = "20260101T000000Z";
    let object = catalog::object_key("fixturedb", chain_id, 1, 8);
    std::fs::create_dir_all(dir.join(&object).parent().unwrap()).unwrap();
    std::fs::write(dir.join(&object), &bytes).unwrap();
    let final_hash = base64_decode(json["final_state"]["txHash"].as_str().unwrap());
    let manifest = Manifest {
        format: catalog::MANIFEST_FORMAT,
        database: "fixturedb".into(),
        chain: chain_id.into(),
        object: object.clone(),
        first_tx: 1,
        last_tx: 8,
        prev_alh: hex(&immudb_txlog::EMPTY_ALH),
        last_alh: hex(&final_hash),
        immudb_version: "1.10.0".into(),
        source: "immuadmin hot-backup".into(),
        created: chrono::Utc::now(),
        records: 8,
        bytes: bytes.len() as u64,
        sha256: hex(&Sha256::digest(&bytes)),
    };
    std::fs::write(
        dir.join(catalog::manifest_key("fixturedb", chain_id, 1, 8)),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let node = cluster.start_node(0).await;
    let report = restore_into(&cluster, &[&dir_flag(&dir), "--databases=fixturedb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        state_of(&node, "fixturedb"),
        (8, final_hash.try_into().unwrap())
    );
    node.with_state(|s| {
        assert_eq!(
            s.databases["fixturedb"].ledger.get(b"k1"),
            Some((3, b"v1-second".to_vec()))
        )
    });
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

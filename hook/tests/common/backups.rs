//! Helpers shared by the backup, restore and disaster-recovery tests: databases seeded and
//! backed up, the hook's commands run in process, their reports read, backups tampered with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use immudb_double::Node;
use immudb_hook::backup::catalog::Manifest;
use immudb_hook::backup::{rebuild, restore, run};
use immudb_hook::cli::Command;
use immudb_hook::report::{Outcome, Report};
use immudb_txlog::{hex, Hash};
use sha2::{Digest, Sha256};

use super::{converge_databases, start_all, Cluster};

pub fn backup_report_of(
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

pub async fn restore_into(target: &Cluster, extra: &[&str]) -> Report {
    restore_with_timeout(target, 10, extra).await
}

/// `restore` with `--timeout-seconds=timeout_s`.
pub async fn restore_with_timeout(target: &Cluster, timeout_s: u64, extra: &[&str]) -> Report {
    let cli = target.cli(&[], timeout_s, "restore", extra);
    let Command::Restore(args) = &cli.command else {
        unreachable!()
    };
    restore::restore(&args.config(&cli.topology).expect("valid restore config")).await
}

pub fn completed(report: &Report) -> Vec<String> {
    report
        .lines
        .iter()
        .map(|l| match &l.outcome {
            Outcome::Completed(what) => what.clone(),
            other => panic!("{}: {other}\n{report}", l.host),
        })
        .collect()
}

pub fn failure(report: &Report) -> String {
    match &report.lines[0].outcome {
        Outcome::Failed { reason, .. } => reason.clone(),
        other => panic!("expected a failure, got {other}"),
    }
}

/// A primary with `appdb` holding `count` transactions, and `replicas` replicas converged on it.
pub async fn seeded(cluster: &Cluster, replicas: u8, count: u8) -> Vec<Node> {
    let nodes = start_all(cluster, replicas).await;
    let report = converge_databases(cluster, &cluster.replica_hosts(replicas), &["appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    write(&nodes[0], 0, count);
    for replica in &nodes[1..] {
        caught_up(&nodes[0], replica).await;
    }
    nodes
}

/// Writes transactions `from..from+count`, each one key `k<i>` with a value of 200 bytes.
pub fn write(node: &Node, from: u8, count: u8) {
    node.with_state(|s| {
        let db = s.databases.get_mut("appdb").unwrap();
        for i in from..from + count {
            db.ledger
                .commit(&[(format!("k{i}").into_bytes(), vec![i; 200])]);
        }
    });
}

pub fn state_of(node: &Node, db: &str) -> (u64, Hash) {
    node.with_state(|s| s.databases[db].ledger.state())
}

pub async fn caught_up(primary: &Node, replica: &Node) {
    for _ in 0..200 {
        if state_of(primary, "appdb") == state_of(replica, "appdb") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the replica did not catch up");
}

/// Every file under `dir`, relative, sorted.
pub fn files(dir: &Path) -> Vec<String> {
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

pub fn backup_dir(cluster: &Cluster) -> PathBuf {
    let dir = cluster.dir.path().join("backups");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn dir_flag(dir: &Path) -> String {
    format!("--dir={}", dir.display())
}

/// A cluster whose `appdb` (8 transactions) is backed up in two objects: 1..5 and 6..8.
pub async fn backed_up(cluster: &Cluster) -> (Vec<Node>, PathBuf) {
    let (nodes, dir) = backed_up_once(cluster, 5).await;
    write(&nodes[0], 5, 3);
    let flags = [dir_flag(&dir), "--databases=appdb".to_string()];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    assert_eq!(backup_report_of(cluster, &[], &flags).await.exit_code(), 0);
    (nodes, dir)
}

/// A primary whose `appdb` holds `count` transactions, backed up in one object.
pub async fn backed_up_once(cluster: &Cluster, count: u8) -> (Vec<Node>, PathBuf) {
    let nodes = seeded(cluster, 0, count).await;
    let dir = backup_dir(cluster);
    let report = backup_report_of(cluster, &[], &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    (nodes, dir)
}

/// The primary `lost` comes back at its address on an empty volume.
pub async fn restarted_empty(cluster: &Cluster, lost: Node) -> Node {
    drop(lost);
    loop {
        match Node::start(cluster.options(0), &cluster.network).await {
            Ok(node) => break node,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `rebuild-primary` of `appdb` from `replicas` replicas.
pub async fn rebuild_appdb(cluster: &Cluster, replicas: u8) -> Report {
    let cli = cluster.cli(
        &cluster.replica_hosts(replicas),
        10,
        "rebuild-primary",
        &["--databases=appdb"],
    );
    let Command::RebuildPrimary(args) = &cli.command else {
        unreachable!()
    };
    rebuild::rebuild_primary(&args.config(&cli.topology).unwrap()).await
}

pub fn objects(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|f| f.ends_with(".immubackup"))
        .collect()
}

/// Rewrites the manifest of `object` so that its SHA-256 matches the object's bytes again.
pub fn reseal(dir: &Path, object: &str) {
    let manifest_path = dir.join(object.replace(".immubackup", ".manifest.json"));
    let mut manifest: Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest.sha256 = hex(&Sha256::digest(std::fs::read(dir.join(object)).unwrap()));
    std::fs::write(manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
}

/// Flips one byte of the last value of the first object and reseals its manifest, as someone
/// with write access to the bucket would. Returns the object.
pub fn tamper(dir: &Path) -> String {
    let first = objects(dir)[0].clone();
    let path = dir.join(&first);
    let mut bytes = std::fs::read(&path).unwrap();
    let in_value = bytes.len() - 10;
    bytes[in_value] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    reseal(dir, &first);
    first
}

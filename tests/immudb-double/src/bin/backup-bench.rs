//! Benchmarks the release hook's `backup` and `restore` against the immudb double on loopback:
//! throughput in transactions and megabytes per second, and the hook's peak RSS backing up a
//! small database and then a 1 GiB one (it streams, so the second must not need more memory).
//! The peak is the child's own VmHWM: getrusage(RUSAGE_CHILDREN) would also count the pages the
//! child shared with this process (which holds the 1 GiB database) before it exec'd.
//! Prints a BENCHMARKS.md section on stdout.
//! Usage: backup-bench <path to immudb-hook>

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use immudb_double::{Database, Network, Node, NodeOptions};

const ADMIN_PASSWORD: &str = "bench-admin";

fn ip(subnet: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 78, subnet, 1))
}

async fn start(network: &Network, subnet: u8) -> Node {
    let mut options = NodeOptions::new(
        SocketAddr::new(ip(subnet), 3322),
        SocketAddr::new(ip(subnet), 9497),
    );
    options.admin_password = ADMIN_PASSWORD.into();
    Node::start(options, network).await.expect("start double")
}

/// `count` transactions of one entry with a `value_len`-byte value each.
fn seed(node: &Node, count: usize, value_len: usize) -> u64 {
    node.with_state(|s| {
        let mut db = Database {
            loaded: true,
            ..Default::default()
        };
        for i in 0..count {
            let value: Vec<u8> = (0..value_len).map(|j| (i * 31 + j) as u8).collect();
            db.ledger
                .commit(&[(format!("key-{i:08}").into_bytes(), value)]);
        }
        let bytes = db.ledger.payload_bytes();
        s.databases.insert("appdb".into(), db);
        bytes
    })
}

struct Run {
    elapsed: Duration,
    peak_rss_kib: u64,
}

/// The high-water mark of a process's resident memory, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the hook to completion, reading its peak RSS every 20 ms until it exits.
async fn hook(binary: &str, dir: &Path, subnet: u8, subcommand: &str, backups: &Path) -> Run {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env("IMMUDB_HOOK_PRIMARY_HOST", ip(subnet).to_string())
        .env("IMMUDB_HOOK_ADMIN_PASSWORD_FILE", dir.join("admin"))
        .env("IMMUDB_HOOK_DATABASES", "appdb")
        .env("IMMUDB_HOOK_BACKUP_DIR", backups)
        .env("IMMUDB_HOOK_BACKUP_SOURCE", "primary")
        .env("IMMUDB_HOOK_LOG", "warn")
        .arg(subcommand)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run hook");
    let pid = child.id().expect("a running child");
    let mut peak_rss_kib = 0;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.expect("wait for the hook"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                peak_rss_kib = vm_hwm_kib(pid).unwrap_or(0).max(peak_rss_kib);
            }
        }
    };
    assert!(status.success(), "{subcommand} failed: {status}");
    Run {
        elapsed: started.elapsed(),
        peak_rss_kib,
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| {
                    let path = e.unwrap().path();
                    if path.is_dir() {
                        dir_bytes(&path)
                    } else {
                        std::fs::metadata(&path).map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let binary = std::env::args()
        .nth(1)
        .expect("usage: backup-bench <path to immudb-hook>");
    let dir = std::env::temp_dir().join(format!("backup-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin"), ADMIN_PASSWORD).unwrap();
    let network = Network::default();

    println!("\n## Backup and restore\n");
    println!("`make bench`: the release hook's `backup` (from the primary, into a directory) and `restore` (into a new primary) against the immudb double on loopback (2 shared cores). Each transaction costs TxById + exportTx on backup and one replicateTx on restore.\n");
    println!("| database | transactions | backup tx/s | backup MB/s | restore tx/s | restore MB/s |\n| --- | --- | --- | --- | --- | --- |");
    let cases = [
        ("20,000 x 256 B", 20_000usize, 256usize),
        ("256 x 64 KiB", 256, 65_536),
    ];
    for (subnet, (name, count, value_len)) in (1u8..).zip(cases) {
        let source = start(&network, subnet * 2).await;
        seed(&source, count, value_len);
        let backups = dir.join(format!("throughput-{subnet}"));
        std::fs::create_dir_all(&backups).unwrap();
        let backed_up = hook(&binary, &dir, subnet * 2, "backup", &backups).await;
        let bytes = dir_bytes(&backups) as f64;
        let target = start(&network, subnet * 2 + 1).await;
        let restored = hook(&binary, &dir, subnet * 2 + 1, "restore", &backups).await;
        let same = source.with_state(|s| s.databases["appdb"].ledger.state())
            == target.with_state(|s| s.databases["appdb"].ledger.state());
        assert!(same, "the restore does not match the source");
        let rate = |run: &Run| count as f64 / run.elapsed.as_secs_f64();
        let mbps = |run: &Run| bytes / 1e6 / run.elapsed.as_secs_f64();
        println!(
            "| {name} | {count} | {:.0} | {:.1} | {:.0} | {:.1} |",
            rate(&backed_up),
            mbps(&backed_up),
            rate(&restored),
            mbps(&restored)
        );
    }

    // Memory: a 64 MiB database, then a 1 GiB one, both 64 KiB per transaction.
    let mut rows = Vec::new();
    for (subnet, (name, count)) in (10u8..).zip([("64 MiB", 1024usize), ("1 GiB", 16_384)]) {
        let source = start(&network, subnet).await;
        let payload = seed(&source, count, 65_536);
        let backups = dir.join(format!("memory-{subnet}"));
        std::fs::create_dir_all(&backups).unwrap();
        let run = hook(&binary, &dir, subnet, "backup", &backups).await;
        rows.push((name, payload, dir_bytes(&backups), run));
        drop(source);
    }
    println!("\nPeak RSS of the backup process (its VmHWM, read every 20 ms while it runs). The backup streams: it holds one transaction and at most two 8 MiB upload parts at a time, whatever the size of the database.\n");
    println!("| database | payload (MiB) | backup object (MiB) | backup time (s) | peak RSS of the hook (MB) |\n| --- | --- | --- | --- | --- |");
    for (name, payload, object, run) in &rows {
        println!(
            "| {name} | {:.0} | {:.0} | {:.1} | {:.1} |",
            *payload as f64 / 1048576.0,
            *object as f64 / 1048576.0,
            run.elapsed.as_secs_f64(),
            run.peak_rss_kib as f64 / 1024.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! Benchmarks the release hook's `backup` and `restore` against the immudb double on loopback,
//! where a commit costs what it costs on immudb (the syncer's syncFrequency/4 waits and one fsync
//! for every commit pending, `immudb_double::commits`): restore throughput with 1, 10 and 30
//! replicateTx in flight beside the figures a real immudb 1.11.1 gave on the same kind of
//! machine, backup throughput with 1 to 32 reads in flight, and the peak RSS of both commands
//! for databases of 64 MiB to 1 GiB. The peak is the child's own VmHWM: getrusage
//! (RUSAGE_CHILDREN) would also count the pages the child shared with this process (which holds
//! the databases) before it exec'd. Prints a BENCHMARKS.md section on stdout.
//! Usage: backup-bench <path to immudb-hook>

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use immudb_double::{Database, Network, Node, NodeOptions, FSYNC};

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

/// `count` transactions of one entry with a `value_len`-byte value each; returns the payload.
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

impl Run {
    fn rate(&self, transactions: usize) -> f64 {
        transactions as f64 / self.elapsed.as_secs_f64()
    }
}

/// The high-water mark of a process's resident memory, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the hook to completion with `flags` after the subcommand, reading its peak RSS every
/// 20 ms until it exits.
async fn hook(
    binary: &str,
    dir: &Path,
    subnet: u8,
    subcommand: &str,
    backups: &Path,
    flags: &[String],
) -> Run {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env("IMMUDB_HOOK_PRIMARY_HOST", ip(subnet).to_string())
        .env("IMMUDB_HOOK_ADMIN_PASSWORD_FILE", dir.join("admin"))
        .env("IMMUDB_HOOK_DATABASES", "appdb")
        .env("IMMUDB_HOOK_BACKUP_DIR", backups)
        .env("IMMUDB_HOOK_BACKUP_SOURCE", "primary")
        .env("IMMUDB_HOOK_LOG", "warn")
        .arg(subcommand)
        .args(flags)
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
    assert!(status.success(), "{subcommand} {flags:?} failed: {status}");
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

struct Bench {
    binary: String,
    dir: PathBuf,
    network: Network,
    next_subnet: u8,
}

impl Bench {
    async fn node(&mut self) -> Node {
        self.next_subnet += 1;
        start(&self.network, self.next_subnet).await
    }

    fn subnet(node: &Node) -> u8 {
        match node.options.grpc.ip() {
            IpAddr::V4(v4) => v4.octets()[2],
            IpAddr::V6(_) => unreachable!("the benches use IPv4 loopback"),
        }
    }

    fn fresh_dir(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    async fn backup(&self, source: &Node, backups: &Path, flags: &[String]) -> Run {
        let subnet = Bench::subnet(source);
        hook(&self.binary, &self.dir, subnet, "backup", backups, flags).await
    }

    /// Restores into a new node; checks it reproduced `source`'s state.
    async fn restore(&mut self, source: &Node, backups: &Path, flags: &[String]) -> Run {
        let target = self.node().await;
        let subnet = Bench::subnet(&target);
        let run = hook(&self.binary, &self.dir, subnet, "restore", backups, flags).await;
        let state = |node: &Node| node.with_state(|s| s.databases["appdb"].ledger.state());
        assert_eq!(state(&target), state(source), "the restore does not match");
        run
    }
}

/// A real immudb 1.11.1 on loopback, 2 shared cores, 5,000 x 256 B, fresh database at
/// syncFrequency 20 ms (`shared/immudb-facts.md`, "replicateTx ordering and restore speed"):
/// one replicateTx at a time (our restore), and immudb's replicator committing 10 and 30 at once.
const REAL_RESTORE: [(usize, f64, &str); 3] = [
    (
        1,
        131.0,
        "our restore one at a time (immuadmin hot-restore: 129)",
    ),
    (10, 791.0, "immudb's replicator, commit concurrency 10"),
    (30, 2219.0, "immudb's replicator, commit concurrency 30"),
];
/// The same machine's backups, one transaction at a time (TxById + exportTx each, as immuadmin
/// and this hook before read-ahead did).
const REAL_BACKUP_ONE_AT_A_TIME: f64 = 1027.0;
const REAL_IMMUADMIN_BACKUP: f64 = 893.0;

#[tokio::main]
async fn main() {
    let binary = std::env::args()
        .nth(1)
        .expect("usage: backup-bench <path to immudb-hook>");
    let dir = std::env::temp_dir().join(format!("backup-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin"), ADMIN_PASSWORD).unwrap();
    let mut bench = Bench {
        binary,
        dir: dir.clone(),
        network: Network::default(),
        next_subnet: 0,
    };

    println!("\n## Backup and restore\n");
    println!(
        "`make bench`: the release hook's `backup` (from the primary, into a directory) and `restore` (into a new database, which immudb creates with syncFrequency 20 ms) against the immudb double on loopback (2 shared cores). The double commits at immudb's cost: a writer waits for the database's syncer, which sleeps syncFrequency/4 (up to four times while commits keep arriving) and then fsyncs once ({} ms here) for every commit pending; concurrent replicateTx calls commit in order. The real figures are a real immudb 1.11.1 on the same kind of machine (`shared/immudb-facts.md`).\n",
        FSYNC.as_millis()
    );

    // Restore: replicateTx in flight, on the data of the real measurement.
    let (count, value_len) = (5_000usize, 256usize);
    let source = bench.node().await;
    seed(&source, count, value_len);
    let backups = bench.fresh_dir("restore-depth");
    bench.backup(&source, &backups, &[]).await;
    let mut restores = Vec::new();
    for (depth, real, what) in REAL_RESTORE {
        let flags = [format!("--pipeline-depth={depth}")];
        let run = bench.restore(&source, &backups, &flags).await;
        restores.push((depth, run.rate(count), real, what));
    }
    println!("### Restore: replicateTx calls in flight (5,000 x 256 B)\n");
    println!("| in flight | double tx/s | double vs 1 | real immudb tx/s | real vs 1 | real measured with |\n| --- | --- | --- | --- | --- | --- |");
    let (double_one, real_one) = (restores[0].1, restores[0].2);
    for (depth, double, real, what) in &restores {
        println!(
            "| {depth} | {double:.0} | {:.1}x | {real:.0} | {:.1}x | {what} |",
            double / double_one,
            real / real_one
        );
    }
    let (double_30, real_30) = (restores[2].1, restores[2].2);
    println!(
        "\nThe restore's default is 30 in flight (lowered to the target's maxConcurrency): {:.1}x one at a time on the double, {:.1}x on the real server with immudb's own replicator. The double's absolute rate one at a time is {:.0}% of the real one ({double_one:.0} vs {real_one:.0} tx/s); at 30, {:.0}% ({double_30:.0} vs {real_30:.0}).\n",
        double_30 / double_one,
        real_30 / real_one,
        100.0 * double_one / real_one,
        100.0 * double_30 / real_30
    );

    // Backup: reads in flight.
    let count = 20_000usize;
    let source = bench.node().await;
    seed(&source, count, value_len);
    let mut backups_rows = Vec::new();
    for read_ahead in [1usize, 4, 16, 32] {
        let backups = bench.fresh_dir(&format!("read-ahead-{read_ahead}"));
        let flags = [format!("--read-ahead={read_ahead}")];
        let run = bench.backup(&source, &backups, &flags).await;
        backups_rows.push((read_ahead, run.rate(count)));
    }
    println!("### Backup: transactions read ahead (20,000 x 256 B)\n");
    println!("| read ahead | double tx/s | vs 1 |\n| --- | --- | --- |");
    let one = backups_rows[0].1;
    for (read_ahead, rate) in &backups_rows {
        println!("| {read_ahead} | {rate:.0} | {:.1}x |", rate / one);
    }
    println!(
        "\nReal immudb 1.11.1, one at a time: {REAL_BACKUP_ONE_AT_A_TIME:.0} tx/s (immuadmin hot-backup {REAL_IMMUADMIN_BACKUP:.0}). The double answers reads from memory at no cost, so these ratios show how much of a backup's time is the client's and the round trips', not what a real server's reads cost; the default is 16.\n"
    );

    // Memory: growing databases of 64 KiB transactions, default depths.
    println!("### Peak RSS as the database grows (64 KiB per transaction)\n");
    println!("The hook's VmHWM, read every 20 ms. A backup holds at most 16 transactions read ahead (each as read and as decoded) and up to three 8 MiB upload parts; a restore holds the record being verified and at most 30 in flight: the bound does not depend on the database's size.\n");
    println!("| database | transactions | backup object (MiB) | backup (s) | backup peak RSS (MB) | restore (s) | restore tx/s | restore peak RSS (MB) |\n| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, count) in [
        ("64 MiB", 1_024usize),
        ("256 MiB", 4_096),
        ("1 GiB", 16_384),
    ] {
        let source = bench.node().await;
        seed(&source, count, 65_536);
        let backups = bench.fresh_dir("memory");
        let backed_up = bench.backup(&source, &backups, &[]).await;
        let restored = bench.restore(&source, &backups, &[]).await;
        println!(
            "| {name} | {count} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} |",
            dir_bytes(&backups) as f64 / 1048576.0,
            backed_up.elapsed.as_secs_f64(),
            backed_up.peak_rss_kib as f64 / 1024.0,
            restored.elapsed.as_secs_f64(),
            restored.rate(count),
            restored.peak_rss_kib as f64 / 1024.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! What the benches share: the hook's command line for a cluster of doubles, and a release for
//! the failover benches.

pub mod release;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;

use immudb_double::NodeOptions;

/// Node `node` of cluster `subnet` of a bench: 127.`bench`.`subnet`.`node + 1`, each bench in
/// its own range.
#[allow(dead_code)] // each bench compiles this module; backup-bench has one node per cluster
pub fn ip(bench: u8, subnet: u8, node: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, bench, subnet, node + 1))
}

/// A double on `ip`'s gRPC and metrics ports with the admin password `admin`.
#[allow(dead_code)]
pub fn node_options(ip: IpAddr, admin: &str) -> NodeOptions {
    let mut options = NodeOptions::new(SocketAddr::new(ip, 3322), SocketAddr::new(ip, 9497));
    options.admin_password = admin.into();
    options
}

/// `hook` with the topology (the primary, the replicas) and the files in `dir` (admin,
/// replication, spec.json) as env; output discarded.
pub fn hook_command(
    hook: &str,
    dir: &Path,
    primary: IpAddr,
    replicas: &[IpAddr],
) -> tokio::process::Command {
    let hosts: Vec<String> = replicas.iter().map(IpAddr::to_string).collect();
    let mut command = tokio::process::Command::new(hook);
    command
        .env("IMMUDB_HOOK_PRIMARY_HOST", primary.to_string())
        .env("IMMUDB_HOOK_REPLICAS", hosts.join(","))
        .env("IMMUDB_HOOK_ADMIN_PASSWORD_FILE", dir.join("admin"))
        .env(
            "IMMUDB_HOOK_REPLICATION_PASSWORD_FILE",
            dir.join("replication"),
        )
        .env("IMMUDB_HOOK_SPEC_FILE", dir.join("spec.json"))
        .env("IMMUDB_HOOK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// (user + system CPU seconds, peak RSS in KiB) of a running process, from /proc.
#[allow(dead_code)] // each bench compiles this module; converge-bench measures with getrusage
pub fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (ticks(11) + ticks(12)) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, peak)
}

/// GET `url` (`host:port/path`): (status, body), None when nothing answers.
#[allow(dead_code)]
pub async fn get(url: &str) -> Option<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(url.split('/').next()?)
        .await
        .ok()?;
    let path = &url[url.find('/')?..];
    let (mut read, mut write) = stream.into_split();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    write
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    read.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The value of the metric line `name` (with its labels) in `body`; NaN when absent.
#[allow(dead_code)]
pub fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}

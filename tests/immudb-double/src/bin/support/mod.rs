//! What the benches share: the hook's command line for a cluster of doubles.

use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;

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

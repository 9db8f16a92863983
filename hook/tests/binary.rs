//! The built binary: exit codes, env-only configuration, secrets never printed, no colours in a
//! piped log, SIGTERM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::process::Command;

fn hook(cluster: &Cluster, replicas: &[String], spec: serde_json::Value) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_immudb-hook"));
    command
        .env("IMMUDB_HOOK_PRIMARY_HOST", cluster.host(0))
        .env("IMMUDB_HOOK_REPLICAS", replicas.join(","))
        .env("IMMUDB_HOOK_ADMIN_PASSWORD_FILE", cluster.path("admin"))
        .env(
            "IMMUDB_HOOK_REPLICATION_PASSWORD_FILE",
            cluster.path("replication"),
        )
        .env("IMMUDB_HOOK_SPEC_FILE", cluster.write_spec(&spec))
        .env("IMMUDB_HOOK_HOSTS_FILE", cluster.path("hosts"))
        .env("IMMUDB_HOOK_RESOLV_CONF", cluster.path("resolv.conf"))
        .env("IMMUDB_HOOK_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test]
async fn converges_from_env_alone_and_never_prints_a_secret() {
    let cluster = Cluster::new();
    let _nodes = start_all(&cluster, 2).await;
    for format in ["text", "json"] {
        let output = hook(&cluster, &cluster.replica_hosts(2), databases(&["appdb"]))
            .env("IMMUDB_HOOK_LOG_FORMAT", format)
            .env_remove("NO_COLOR")
            .arg("converge")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(
            stdout.lines().last().unwrap().starts_with("result: "),
            "{stdout}"
        );
        for secret in [ADMIN_PASSWORD, REPLICATION_PASSWORD] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "a secret leaked"
            );
        }
        // stderr is a pipe here, as in a Job's log: plain text, no ANSI escape codes.
        assert!(stderr.contains("converging"), "{stderr}");
        assert!(
            !stderr.contains("\x1b["),
            "escape codes in a piped log: {stderr:?}"
        );
    }
}

#[tokio::test]
async fn converge_check_runs_without_a_server_address_or_password() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, databases(&["appdb"]).to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_immudb-hook"))
        .env_clear()
        .args(["converge", "--check", "--replicas=r0,r1"])
        .arg(format!("--spec-file={}", spec.display()))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("database appdb"), "{stdout}");
    assert!(stdout.contains("no server was contacted"), "{stdout}");
}

#[tokio::test]
async fn a_missing_primary_host_is_named_with_its_env_and_the_subcommand() {
    let output = Command::new(env!("CARGO_BIN_EXE_immudb-hook"))
        .env_clear()
        .args(["restore", "--dir=/backups", "--databases=appdb"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "invalid configuration for restore: --primary-host (IMMUDB_HOOK_PRIMARY_HOST) is required"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn invalid_flags_exit_2_before_touching_a_server() {
    let cluster = Cluster::new();
    let spec = serde_json::json!({
        "databases": ["appdb"],
        "replication": {"sync": {"enabled": true, "acks": 2}},
    });
    let output = hook(&cluster, &["r0".to_string()], spec)
        .arg("converge")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("replication.sync.acks") && stderr.contains("cannot exceed"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_ends_the_wait_cleanly() {
    let cluster = Cluster::new();
    let mut child = hook(&cluster, &[], databases(&["appdb"]))
        .arg("converge")
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(terminate(&mut child).await, Some(143));
}

/// Sends SIGTERM to `child` and returns its exit code (it must exit within 5 s).
async fn terminate(child: &mut tokio::process::Child) -> Option<i32> {
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    status.code()
}

#[tokio::test]
async fn sigterm_stops_the_agent_with_its_sessions_closed() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    let report = converge_databases(&cluster, &cluster.replica_hosts(1), &["appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let mut child = hook(&cluster, &cluster.replica_hosts(1), databases(&["appdb"]))
        .arg("agent")
        .arg("--role=replica")
        .arg(format!("--listen={}:{AGENT_PORT}", cluster.host(1)))
        .arg(format!("--local-address={}", cluster.host(1)))
        .arg("--poll-interval=100ms")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            open_sessions(&nodes) == [1, 1]
        })
        .await,
        "the agent holds one session on each server: {:?}",
        open_sessions(&nodes)
    );
    assert_eq!(terminate(&mut child).await, Some(143));
    assert_eq!(
        open_sessions(&nodes),
        [0, 0],
        "closed before the process exited"
    );
}

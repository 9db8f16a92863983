//! Invalid specs and flags are rejected before any server is touched, naming the key and the rule.

use std::time::Duration;

use clap::Parser;
use immudb_hook::cli::{Cli, Command};

fn converge_error(spec: serde_json::Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "pw\n").unwrap();
    let spec_file = dir.path().join("spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let args = vec![
        "immudb-hook".to_string(),
        "--primary-host=immudb-primary-0".into(),
        format!("--admin-password-file={}", password.display()),
        "--replicas=r0,r1".into(),
        "converge".into(),
        format!("--spec-file={}", spec_file.display()),
        format!("--replication-password-file={}", password.display()),
    ];
    let cli = Cli::try_parse_from(args).expect("parses");
    let Command::Converge(converge) = &cli.command else {
        unreachable!()
    };
    converge
        .config(&cli.topology)
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn every_invalid_combination_names_its_key_and_rule() {
    use serde_json::json;
    let sync = |enabled: bool, acks: u32| json!({"databases": ["appdb"], "replication": {"sync": {"enabled": enabled, "acks": acks}}});
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            sync(true, 3),
            "replication.sync.acks",
            "cannot exceed the number of replicas (2)",
        ),
        (
            sync(false, 1),
            "replication.sync.acks",
            "need replication.sync.enabled",
        ),
        (sync(true, 0), "replication.sync.acks", "at least 1"),
        (json!({"databases": ["systemdb"]}), "databases", "reserved"),
        (
            json!({"databases": ["DefaultDB"]}),
            "databases",
            "lower-case",
        ),
        (
            json!({"databases": ["app-db"]}),
            "databases",
            "lower-case letters, digits and '_'",
        ),
        (json!({"databases": ["a", "a"]}), "databases", "appear once"),
        (json!({}), "databases", "at least one database"),
        (
            json!({"databases": ["appdb"], "replicationUser": "repl-user"}),
            "replicationUser",
            "letters, digits and '_'",
        ),
        (
            json!({"databases": ["appdb"], "replication": {"prefetchTxBufferSize": 0}}),
            "replication.prefetchTxBufferSize",
            "at least 1",
        ),
        (
            json!({"mode": "systemdb", "databases": ["appdb"]}),
            "databases",
            "systemdb mode",
        ),
        (
            json!({"databases": ["appdb"], "replication": {"commitConcurrency": 40}}),
            "replication.commitConcurrency",
            "exceeds maxConcurrency 30",
        ),
        (
            json!({"databases": ["appdb"], "mode": "sharded"}),
            "--spec-file",
            "unknown variant",
        ),
    ];
    for (spec, key, rule) in cases {
        let error = converge_error(spec.clone());
        assert!(
            error.contains(key) && error.contains(rule),
            "{spec} gave: {error}"
        );
    }
    assert!(converge_error(json!({"databases": ["a".repeat(129)]})).contains("1 to 128"));
}

#[test]
fn topology_errors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "\n").unwrap();
    let parse = |args: &[&str]| {
        let mut all = vec![
            "immudb-hook".to_string(),
            format!("--admin-password-file={}", password.display()),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        all.push("verify".into());
        all.push("--database=chart_canary".into());
        let cli = Cli::try_parse_from(all).unwrap();
        let Command::Verify(verify) = &cli.command else {
            unreachable!()
        };
        verify.config(&cli.topology).unwrap_err().to_string()
    };
    assert!(parse(&["--primary-host=p", "--replicas=p"]).contains("appear once"));
    assert!(parse(&["--primary-host=bad_host!"]).contains("--primary-host"));
    assert!(parse(&[
        "--primary-host=p",
        "--replicas=a",
        "--replica-count=2",
        "--replica-statefulset=s"
    ])
    .contains("not both"));
    assert!(parse(&[
        "--primary-host=p",
        "--replica-count=2",
        "--replica-statefulset=s",
        "--namespace=n"
    ])
    .contains("--replica-service"));
    assert!(parse(&["--primary-host=p"]).contains("the password file is empty"));
}

#[test]
fn the_statefulset_form_expands_to_pod_dns_names() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "pw").unwrap();
    let cli = Cli::try_parse_from([
        "immudb-hook".to_string(),
        "--primary-host=db-primary-0.db-primary-headless.ns.svc.cluster.local".into(),
        format!("--admin-password-file={}", password.display()),
        "--replica-statefulset=db-read".into(),
        "--replica-service=db-read-headless".into(),
        "--namespace=ns".into(),
        "--replica-count=3".into(),
        "verify".into(),
        "--database=chart_canary".into(),
    ])
    .unwrap();
    let Command::Verify(verify) = &cli.command else {
        unreachable!()
    };
    let config = verify.config(&cli.topology).unwrap();
    assert_eq!(
        config.topology.replicas,
        vec![
            "db-read-0.db-read-headless.ns.svc.cluster.local",
            "db-read-1.db-read-headless.ns.svc.cluster.local",
            "db-read-2.db-read-headless.ns.svc.cluster.local",
        ]
    );
}

#[test]
fn verify_skips_a_replica_only_after_at_least_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "pw").unwrap();
    let config = |skip: &str| {
        let cli = Cli::try_parse_from([
            "immudb-hook".to_string(),
            "--primary-host=p".into(),
            format!("--admin-password-file={}", password.display()),
            "verify".into(),
            "--database=chart_canary".into(),
            format!("--skip-after-seconds={skip}"),
        ])
        .unwrap();
        let Command::Verify(verify) = &cli.command else {
            unreachable!()
        };
        verify.config(&cli.topology).map(|c| c.skip_after)
    };
    assert_eq!(config("30").unwrap(), std::time::Duration::from_secs(30));
    let refused = config("0").unwrap_err().to_string();
    assert!(
        refused.contains("--skip-after-seconds") && refused.contains("at least 1"),
        "{refused}"
    );
}

/// The agent's configuration with failover and `extra` flags, or its error.
fn agent_failover(extra: &[&str]) -> Result<immudb_hook::agent::AgentConfig, String> {
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("pw", "pw"),
        ("repl", "repl"),
        ("token", "token"),
        (
            "spec.json",
            r#"{"databases": ["appdb"], "replication": {"sync": {"enabled": true, "acks": 1}, "allowTxDiscarding": true}}"#,
        ),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let path = |file: &str| dir.path().join(file).display().to_string();
    let mut args = vec![
        "immudb-hook".to_string(),
        "--primary-host=db-primary-0.db-primary-hl.ns.svc.cluster.local".into(),
        format!("--admin-password-file={}", path("pw")),
        "--namespace=ns".into(),
        "--lease-name=db-primary".into(),
        "--kube-api-url=http://127.0.0.1:1".into(),
        format!("--kube-token-file={}", path("token")),
        "agent".into(),
        "--role=replica".into(),
        format!("--spec-file={}", path("spec.json")),
        format!("--replication-password-file={}", path("repl")),
        "--pod-name=db-read-0".into(),
        "--pod-host=db-read-0.db-read-hl.ns.svc.cluster.local".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cli = Cli::try_parse_from(args).unwrap();
    let Command::Agent(agent) = &cli.command else {
        unreachable!()
    };
    agent
        .config(&cli.topology, &cli.lease)
        .map_err(|e| e.to_string())
}

#[test]
fn max_replicas_names_who_may_be_elected_and_is_never_below_the_replica_count() {
    let statefulset = [
        "--replica-statefulset=db-read",
        "--replica-service=db-read-hl",
        "--replica-count=2",
    ];
    let eligible = |extra: &[&str]| {
        let mut flags = statefulset.to_vec();
        flags.extend(extra);
        let config = agent_failover(&flags).unwrap();
        config
            .failover
            .unwrap()
            .eligible
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        eligible(&[]),
        vec![
            "db-primary-0.db-primary-hl.ns.svc.cluster.local",
            "db-read-0.db-read-hl.ns.svc.cluster.local",
            "db-read-1.db-read-hl.ns.svc.cluster.local",
        ]
    );
    assert_eq!(eligible(&["--max-replicas=4"]).len(), 5);
    let mut below = statefulset.to_vec();
    below.push("--max-replicas=1");
    let refused = agent_failover(&below).unwrap_err();
    assert!(
        refused.contains("--max-replicas") && refused.contains("at least --replica-count (2)"),
        "{refused}"
    );
    let listed = agent_failover(&[
        "--replicas=db-read-0.db-read-hl.ns.svc.cluster.local",
        "--max-replicas=3",
    ])
    .unwrap_err();
    assert!(listed.contains("needs the StatefulSet form"), "{listed}");
}

#[test]
fn the_hand_over_s_bound_leaves_the_lease_two_api_calls_and_defaults_within_it() {
    let timeout = |extra: &[&str]| {
        let mut flags = vec!["--replicas=db-read-0.db-read-hl.ns.svc.cluster.local"];
        flags.extend(extra);
        agent_failover(&flags).map(|c| c.failover.unwrap().switchover_timeout)
    };
    // The defaults: a 15 s Lease, 5 s polls (2 s per API call): 10 s fits.
    assert_eq!(timeout(&[]), Ok(Duration::from_secs(10)));
    // A short Lease shortens the default: 6 s minus two 1 s calls.
    assert_eq!(
        timeout(&["--lease-duration=6s", "--poll-interval=2s"]),
        Ok(Duration::from_secs(4))
    );
    assert_eq!(
        timeout(&["--switchover-timeout=11s"]),
        Ok(Duration::from_secs(11))
    );
    let refused = timeout(&["--switchover-timeout=12s"]).unwrap_err();
    assert!(
        refused.contains("--switchover-timeout")
            && refused.contains("12s")
            && refused.contains("the other pods must not see the Lease expire"),
        "{refused}"
    );
}

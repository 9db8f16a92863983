//! Invalid combinations are rejected before any server is touched, naming the flag and the rule.

use clap::Parser;
use immudb_hook::config::{Cli, Command};

fn converge_error(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "pw\n").unwrap();
    let mut args = vec![
        "immudb-hook".to_string(),
        "--primary-host=immudb-primary-0".into(),
        format!("--admin-password-file={}", password.display()),
        "--replicas=r0,r1".into(),
        "converge".into(),
        format!("--replication-password-file={}", password.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
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
fn every_invalid_combination_names_its_flag_and_rule() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["--databases=appdb", "--sync-replication", "--sync-acks=3"],
            "--sync-acks",
            "cannot exceed the number of replicas (2)",
        ),
        (
            &["--databases=appdb", "--sync-acks=1"],
            "--sync-acks",
            "need --sync-replication",
        ),
        (
            &["--databases=appdb", "--sync-replication"],
            "--sync-acks",
            "at least 1",
        ),
        (&["--databases=systemdb"], "--databases", "reserved"),
        (&["--databases=DefaultDB"], "--databases", "lower-case"),
        (
            &["--databases=app-db"],
            "--databases",
            "lower-case letters, digits and '_'",
        ),
        (&["--databases=a,a"], "--databases", "appear once"),
        (&[], "--databases", "at least one database"),
        (
            &["--databases=appdb", "--replication-user=repl-user"],
            "--replication-user",
            "letters, digits and '_'",
        ),
        (
            &["--databases=appdb", "--prefetch-tx-buffer-size=0"],
            "--prefetch-tx-buffer-size",
            "at least 1",
        ),
        (
            &["--mode=systemdb", "--databases=appdb"],
            "--databases",
            "systemdb mode",
        ),
    ];
    for (extra, flag, rule) in cases {
        let error = converge_error(extra);
        assert!(
            error.contains(flag) && error.contains(rule),
            "{extra:?} gave: {error}"
        );
    }
    let long = format!("--databases={}", "a".repeat(129));
    assert!(converge_error(&[&long]).contains("1 to 128"));
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

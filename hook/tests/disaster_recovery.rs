//! Disaster recovery at real size, against the double (which commits at immudb's cost): a
//! backup audited with no server, a tampered value refused before any database exists, a
//! restore that outlasts `--timeout-seconds`, sessions lost in the middle of a transfer, the
//! pipeline's first failure, and a target whose maxConcurrency is below the pipeline depth.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use common::backups::*;
use common::*;
use immudb_double::Database;
use immudb_hook::backup::restore;
use immudb_hook::cli::{Cli, Command};
use immudb_hook::report::Report;
use immudb_txlog::hex;

/// `restore --verify-only` with `extra`, and no server flag at all: no primary host, no password.
async fn verify_only(dir: &Path, extra: &[&str]) -> Report {
    let mut args = vec![
        "immudb-hook".to_string(),
        "restore".into(),
        "--verify-only".into(),
        dir_flag(dir),
        "--databases=appdb".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cli = Cli::try_parse_from(args).expect("valid command line");
    let Command::Restore(args) = &cli.command else {
        unreachable!()
    };
    restore::restore(&args.config(&cli.topology).expect("valid restore config")).await
}

#[tokio::test]
async fn verify_only_proves_every_entry_and_the_expected_state_without_a_server() {
    let cluster = Cluster::new();
    let (nodes, dir) = backed_up(&cluster).await;
    let (last, end_alh) = state_of(&nodes[0], "appdb");
    let alh_3 = nodes[0].with_state(|s| s.databases["appdb"].ledger.alh(3));

    let report = verify_only(&dir, &[]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        completed(&report)[0],
        format!(
            "verified chain {} of 'appdb': 2 object(s), 8 records, 8 entries hashed to their eH; tx 1..{last} ends with Alh {}",
            chain_of(&dir),
            hex(&end_alh)
        )
    );

    // The state a replica reported, at the end or at a transaction on the way.
    let at_end = format!("--expect-alh={}", hex(&end_alh).to_uppercase());
    assert_eq!(verify_only(&dir, &[&at_end]).await.exit_code(), 0);
    let at_3 = format!("--expect-alh={}@3", hex(&alh_3));
    let report = verify_only(&dir, &[&at_3]).await;
    assert!(
        completed(&report)[0].ends_with("passes through the expected Alh at tx 3"),
        "{report}"
    );
    let up_to_3 = format!("--expect-alh={}", hex(&alh_3));
    assert_eq!(
        verify_only(&dir, &[&up_to_3, "--up-to-tx=3"])
            .await
            .exit_code(),
        0
    );

    // A state the chain reaches elsewhere, or never.
    let report = verify_only(&dir, &[&up_to_3]).await;
    assert_eq!(report.exit_code(), 8, "{report}");
    assert!(
        failure(&report).contains(&format!(
            "ends at tx 8 with Alh {}, not the expected {}; the chain has that Alh at tx 3",
            hex(&end_alh),
            hex(&alh_3)
        )),
        "{report}"
    );
    let elsewhere = format!("--expect-alh={}@4", hex(&alh_3));
    let report = verify_only(&dir, &[&elsewhere]).await;
    assert!(
        failure(&report).contains("does not pass through") && failure(&report).contains("at tx 3"),
        "{report}"
    );
    let never = format!("--expect-alh={}", hex(&[7; 32]));
    let report = verify_only(&dir, &[&never]).await;
    assert!(
        failure(&report).ends_with("no transaction of the chain has that Alh"),
        "{report}"
    );
}

/// The chain id of the only chain of `appdb` under `dir`.
fn chain_of(dir: &Path) -> String {
    let entry = std::fs::read_dir(dir.join("appdb"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    entry.file_name().to_string_lossy().to_string()
}

#[tokio::test]
async fn a_tampered_value_with_a_consistent_manifest_is_refused_before_any_database_exists() {
    let cluster = Cluster::new();
    let (_nodes, dir) = backed_up(&cluster).await;
    let object = tamper(&dir);
    let named = format!("{object}: record 4 (tx 5) at byte ");

    let report = verify_only(&dir, &[]).await;
    assert_eq!(report.exit_code(), 8, "{report}");
    let reason = failure(&report);
    assert!(reason.contains(&named), "{reason}");
    assert!(
        reason.contains("tx 5: entry 0 at byte ")
            && reason.contains("does not hash to the header's eH"),
        "{reason}"
    );

    let target = Cluster::new();
    let node = target.start_node(0).await;
    let report = restore_into(&target, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(report.exit_code(), 8, "{report}");
    assert_eq!(
        failure(&report),
        reason,
        "restore's first pass says the same"
    );
    node.with_state(|s| assert!(!s.databases.contains_key("appdb"), "nothing was created"));
}

#[tokio::test]
async fn a_restore_that_outlasts_the_timeout_completes() {
    let cluster = Cluster::new();
    let (source, dir) = backed_up_once(&cluster, 40).await;

    // 50 ms on every call and one replicateTx at a time: 40 transactions take well over the
    // 1-second timeout, which bounds each call only.
    let target = Cluster::new();
    let mut options = target.options(0);
    options.latency = Duration::from_millis(50);
    let node = target.start(options).await;
    let started = Instant::now();
    let report = restore_with_timeout(
        &target,
        1,
        &[&dir_flag(&dir), "--databases=appdb", "--pipeline-depth=1"],
    )
    .await;
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the scenario needs a restore longer than its timeout"
    );
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(state_of(&node, "appdb"), state_of(&source[0], "appdb"));
    node.with_state(|s| assert!(!s.databases["appdb"].replication.replica));
}

#[tokio::test]
async fn sessions_lost_in_the_middle_of_a_transfer_are_reopened() {
    let cluster = Cluster::new();
    let nodes = seeded(&cluster, 1, 60).await;
    let dir = backup_dir(&cluster);
    for node in &nodes {
        *node.faults.reap_sessions_every.lock().unwrap() = Some(25);
    }
    let report = backup_report_of(
        &cluster,
        &cluster.replica_hosts(1),
        &[&dir_flag(&dir), "--databases=appdb"],
    )
    .await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(nodes[1].faults.sessions_reaped.load(Ordering::SeqCst) > 0);

    let target = Cluster::new();
    let node = target.start_node(0).await;
    *node.faults.reap_sessions_every.lock().unwrap() = Some(25);
    let report = restore_into(&target, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(node.faults.sessions_reaped.load(Ordering::SeqCst) > 0);
    assert_eq!(state_of(&node, "appdb"), state_of(&nodes[0], "appdb"));
    assert_eq!(open_sessions(&nodes), [0, 0]);
    assert_eq!(open_sessions([&node]), [0]);

    // rebuild-primary: the primary is lost and comes back empty, both ends lose sessions.
    let mut nodes = nodes;
    let fresh = restarted_empty(&cluster, nodes.remove(0)).await;
    *fresh.faults.reap_sessions_every.lock().unwrap() = Some(25);
    let report = rebuild_appdb(&cluster, 1).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(fresh.faults.sessions_reaped.load(Ordering::SeqCst) > 0);
    assert_eq!(state_of(&fresh, "appdb"), state_of(&node, "appdb"));
    assert_eq!(open_sessions([&fresh, &nodes[0]]), [0, 0]);
}

#[tokio::test]
async fn the_first_failed_replicate_stops_the_restore_and_append_continues() {
    let cluster = Cluster::new();
    let (nodes, dir) = backed_up(&cluster).await;
    let target = Cluster::new();
    let node = target.start_node(0).await;
    *node.faults.failing_replicates_after.lock().unwrap() = Some(5);
    let report = restore_into(&target, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(report.exit_code(), 5, "{report}");
    let reason = failure(&report);
    // Calls arrive in any order; the first failure in transaction order is reported, and every
    // transaction before it is in.
    let failed: u64 = reason
        .strip_prefix("tx ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the failure names its transaction: {reason}"));
    assert!(failed <= 6, "{reason}");
    assert!(
        reason.contains("replicateTx: injected: the target failed while replicating")
            && reason.ends_with("stays read-only (replica mode): rerun with --append to continue"),
        "{reason}"
    );
    node.with_state(|s| {
        let db = &s.databases["appdb"];
        assert_eq!(db.ledger.state().0, failed - 1);
        assert!(db.replication.replica);
    });

    *node.faults.failing_replicates_after.lock().unwrap() = None;
    let report = restore_into(&target, &[&dir_flag(&dir), "--databases=appdb", "--append"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        completed(&report)[0].starts_with(&format!("restored tx {failed}..8 ")),
        "{report}"
    );
    assert_eq!(state_of(&node, "appdb"), state_of(&nodes[0], "appdb"));
}

#[tokio::test]
async fn the_pipeline_is_no_deeper_than_the_target_max_concurrency() {
    let cluster = Cluster::new();
    let (source, dir) = backed_up_once(&cluster, 40).await;
    let target = Cluster::new();
    let node = target.start_node(0).await;
    // An empty database an operator created with maxConcurrency 2: more calls in flight could
    // run more than 2 transactions ahead, which immudb refuses.
    node.with_state(|s| {
        let mut db = Database::loaded();
        db.settings.max_concurrency = 2;
        db.effective = db.settings.clone();
        s.databases.insert("appdb".into(), db);
    });
    let report = restore_into(&target, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        completed(&report)[0].contains("(2 replicateTx in flight)"),
        "{report}"
    );
    assert_eq!(state_of(&node, "appdb"), state_of(&source[0], "appdb"));
    let most = node.with_state(|s| s.databases["appdb"].commits.most_calls_in_flight());
    assert!(
        (1..=2).contains(&most),
        "{most} calls were in flight at once"
    );

    // The default depth on a default database: more than one call in flight, within 30.
    let report = restore_into(
        &target,
        &[&dir_flag(&dir), "--databases=appdb", "--restore-as=copy"],
    )
    .await;
    assert!(
        completed(&report)[0].contains("(30 replicateTx in flight)"),
        "{report}"
    );
    let most = node.with_state(|s| s.databases["copy"].commits.most_calls_in_flight());
    assert!(
        (2..=30).contains(&most),
        "{most} calls were in flight at once"
    );
}

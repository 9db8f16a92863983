//! `backup` from a replica holds what the primary had committed when the run started: it waits
//! for a replica that lacks transactions, passes over one that does not catch up in time for
//! another its agent calls Ready, and fails naming the lag when none does; never "up to date"
//! while behind (issue: a backup read a Ready async replica still at tx 0 after 300 writes).

mod common;

use std::time::Duration;

use common::backups::*;
use common::*;

const AGENT: &str = "--agent-port=9498";

/// The primary's replication stops: replicas keep what they have while the primary commits
/// `count` more transactions after `from`.
fn replicas_fall_behind(primary: &immudb_double::Node, from: u8, count: u8) {
    primary.with_state(|s| s.refuse_replication = true);
    write(primary, from, count);
}

#[tokio::test]
async fn a_backup_from_a_replica_that_lacks_the_latest_writes_waits_until_it_holds_them() {
    let cluster = Cluster::new();
    let nodes = seeded(&cluster, 1, 5).await;
    replicas_fall_behind(&nodes[0], 5, 3);
    let dir = backup_dir(&cluster);
    let flag = dir_flag(&dir);
    let backup = backup_report_of(
        &cluster,
        &cluster.replica_hosts(1),
        &[&flag, "--databases=appdb", "--catch-up-timeout=20s"],
    );
    let primary = &nodes[0];
    let resume = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        primary.with_state(|s| s.refuse_replication = false);
    };
    let (report, ()) = tokio::join!(backup, resume);
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.lines[0].host, cluster.host(1), "{report}");
    assert!(
        completed(&report)[0].starts_with("backed up tx 1..8 "),
        "{report}"
    );
}

#[tokio::test]
async fn a_replica_that_does_not_catch_up_in_time_is_passed_over_for_another_ready_one() {
    let cluster = Cluster::new();
    let nodes = seeded(&cluster, 2, 3).await;
    // Replica 1 follows nobody it can reach: it keeps 3 transactions while the others get 5.
    nodes[1].with_state(|s| {
        s.databases
            .get_mut("appdb")
            .unwrap()
            .replication
            .primary_host = "nowhere".into();
    });
    write(&nodes[0], 3, 2);
    caught_up(&nodes[0], &nodes[2]).await;
    // Both agents call their replica Ready; replica 2's answers only later, so replica 1 is
    // chosen first.
    let _first = cluster.fake_agent(1, true).await;
    let late = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.fake_agent(2, true).await
    };
    let dir = backup_dir(&cluster);
    let flag = dir_flag(&dir);
    let backup = backup_report_of(
        &cluster,
        &cluster.replica_hosts(2),
        &[&flag, "--databases=appdb", "--catch-up-timeout=1s", AGENT],
    );
    let (report, _second) = tokio::join!(backup, late);
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.lines[0].host, cluster.host(2), "{report}");
    assert!(
        completed(&report)[0].starts_with("backed up tx 1..5 "),
        "{report}"
    );
}

#[tokio::test]
async fn with_no_replica_holding_what_the_primary_committed_the_backup_fails_naming_the_lag() {
    let cluster = Cluster::new();
    let nodes = seeded(&cluster, 1, 3).await;
    replicas_fall_behind(&nodes[0], 3, 2);
    let dir = backup_dir(&cluster);
    let report = backup_report_of(
        &cluster,
        &cluster.replica_hosts(1),
        &[
            &dir_flag(&dir),
            "--databases=appdb",
            "--catch-up-timeout=1s",
        ],
    )
    .await;
    assert_eq!(report.exit_code(), 6, "{report}");
    let reason = failure(&report);
    assert!(
        reason.contains(&cluster.host(1)) && reason.contains("appdb holds tx 3 of 5"),
        "{reason}"
    );
    assert!(files(&dir).is_empty(), "nothing written: {:?}", files(&dir));
}

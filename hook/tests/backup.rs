//! `backup`, `restore` and `rebuild-primary` against the immudb double: round trips with
//! incremental runs, an interrupted run, corrupted and foreign files, gaps, refused targets,
//! restores up to a transaction, a primary rebuilt from its most advanced replica, and the real
//! immuadmin file restored.

mod common;

use std::path::{Path, PathBuf};

use common::backups::*;
use common::*;
use immudb_double::Database;
use immudb_hook::backup::catalog::{self, Manifest};
use immudb_hook::backup::{rebuild, run};
use immudb_hook::cli::Command;
use immudb_txlog::{hex, Chain, RecordReader};
use sha2::{Digest, Sha256};

/// Reads the objects of `database`'s newest chain as one hot-backup file and verifies it.
async fn verified_records(dir: &Path, database: &str) -> u64 {
    let mut objects: Vec<String> = files(dir)
        .into_iter()
        .filter(|f| f.starts_with(&format!("{database}/")) && f.ends_with(".immubackup"))
        .collect();
    objects.sort();
    let concatenated: Vec<u8> = objects
        .iter()
        .flat_map(|o| std::fs::read(dir.join(o)).unwrap())
        .collect();
    let mut reader = RecordReader::new(&concatenated[..]);
    let mut chain = Chain::genesis();
    while let Some(record) = reader.next().await.unwrap() {
        chain.verify(&record).unwrap();
    }
    chain.last_id
}

#[tokio::test]
async fn incremental_backups_restore_to_the_source_state() {
    let cluster = Cluster::new();
    let nodes = seeded(&cluster, 1, 5).await;
    let dir = backup_dir(&cluster);
    let replicas = cluster.replica_hosts(1);

    let first =
        backup_report_of(&cluster, &replicas, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(first.exit_code(), 0, "{first}");
    assert!(
        completed(&first)[0].starts_with("backed up tx 1..5 "),
        "{first}"
    );
    assert_eq!(
        first.lines[0].host,
        cluster.host(1),
        "a replica is the default source"
    );
    write(&nodes[0], 5, 3);
    caught_up(&nodes[0], &nodes[1]).await;
    let second =
        backup_report_of(&cluster, &replicas, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert!(
        completed(&second)[0].starts_with("backed up tx 6..8 "),
        "{second}"
    );
    let third =
        backup_report_of(&cluster, &replicas, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert!(
        completed(&third)[0].starts_with("up to date at tx 8"),
        "{third}"
    );
    let listed = files(&dir);
    assert_eq!(
        listed.len(),
        4,
        "two objects and their manifests: {listed:?}"
    );
    assert_eq!(
        verified_records(&dir, "appdb").await,
        8,
        "the objects concatenate into one hot-backup file"
    );

    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(
            dir.join(
                listed
                    .iter()
                    .find(|f| f.ends_with(".manifest.json"))
                    .unwrap(),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            manifest.database.as_str(),
            manifest.first_tx,
            manifest.last_tx
        ),
        ("appdb", 1, 5)
    );
    assert_eq!(manifest.immudb_version, "1.11.1");
    assert_eq!(
        manifest.bytes,
        std::fs::metadata(dir.join(&manifest.object)).unwrap().len()
    );

    let target = Cluster::new();
    let _new_primary = target.start_node(0).await;
    let restored = restore_into(&target, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(restored.exit_code(), 0, "{restored}");
    assert!(
        completed(&restored)[0].contains("CurrentState txId 8"),
        "{restored}"
    );
    assert_eq!(
        state_of(&_new_primary, "appdb"),
        state_of(&nodes[0], "appdb")
    );
    _new_primary.with_state(|s| {
        let db = &s.databases["appdb"];
        assert!(!db.replication.replica, "the restored database is writable");
        assert_eq!(db.ledger.get(b"k7"), Some((8, vec![7; 200])));
    });
}

#[tokio::test]
async fn the_real_immuadmin_file_restores_into_the_double() {
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../txlog/tests/fixtures/immudb-1.10.0");
    let bytes = std::fs::read(fixture.join("fixturedb.immubackup")).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("fixturedb.json")).unwrap()).unwrap();
    let cluster = Cluster::new();
    let dir = backup_dir(&cluster);
    let chain_id = "20260101T000000Z";
    let object = catalog::object_key("fixturedb", chain_id, 1, 8);
    std::fs::create_dir_all(dir.join(&object).parent().unwrap()).unwrap();
    std::fs::write(dir.join(&object), &bytes).unwrap();
    let final_hash = base64_decode(json["final_state"]["txHash"].as_str().unwrap());
    let manifest = Manifest {
        format: catalog::MANIFEST_FORMAT,
        database: "fixturedb".into(),
        chain: chain_id.into(),
        object: object.clone(),
        first_tx: 1,
        last_tx: 8,
        prev_alh: hex(&immudb_txlog::EMPTY_ALH),
        last_alh: hex(&final_hash),
        immudb_version: "1.10.0".into(),
        source: "immuadmin hot-backup".into(),
        created: chrono::Utc::now(),
        records: 8,
        bytes: bytes.len() as u64,
        sha256: hex(&Sha256::digest(&bytes)),
    };
    std::fs::write(
        dir.join(catalog::manifest_key("fixturedb", chain_id, 1, 8)),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let node = cluster.start_node(0).await;
    let report = restore_into(&cluster, &[&dir_flag(&dir), "--databases=fixturedb"]).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        state_of(&node, "fixturedb"),
        (8, final_hash.try_into().unwrap())
    );
    node.with_state(|s| {
        assert_eq!(
            s.databases["fixturedb"].ledger.get(b"k1"),
            Some((3, b"v1-second".to_vec()))
        )
    });
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn an_interrupted_run_writes_nothing_and_the_next_run_completes() {
    let cluster = Cluster::new();
    let nodes = seeded(&cluster, 1, 6).await;
    let dir = backup_dir(&cluster);
    let replicas = cluster.replica_hosts(1);
    *nodes[1].faults.failing_exports_after.lock().unwrap() = Some(3);
    let broken =
        backup_report_of(&cluster, &replicas, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(broken.exit_code(), 5, "{broken}");
    assert!(failure(&broken).contains("exportTx"), "{broken}");
    assert!(
        files(&dir).is_empty(),
        "an interrupted run leaves nothing: {:?}",
        files(&dir)
    );
    *nodes[1].faults.failing_exports_after.lock().unwrap() = None;
    let resumed =
        backup_report_of(&cluster, &replicas, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert!(
        completed(&resumed)[0].starts_with("backed up tx 1..6 "),
        "{resumed}"
    );
    assert_eq!(verified_records(&dir, "appdb").await, 6);
}

#[tokio::test]
async fn a_corrupted_record_is_named_before_anything_is_written() {
    let cluster = Cluster::new();
    let (_nodes, dir) = backed_up(&cluster).await;
    let first = &objects(&dir)[0];
    let path = dir.join(first);
    let original = std::fs::read(&path).unwrap();
    let target = Cluster::new();
    let node = target.start_node(0).await;
    let flag = dir_flag(&dir);
    let args = [flag.as_str(), "--databases=appdb"];
    let restore = || restore_into(&target, &args);

    // A flipped byte in the last value, with the manifest as written and then resealed as someone
    // with write access to the bucket would: the entries hash names the record, the transaction,
    // the entry and where it is in the object.
    let mut records = RecordReader::new(&original[..]);
    let mut last_record = (0, None);
    loop {
        let offset = records.offset();
        match records.next().await.unwrap() {
            Some(record) => last_record = (offset, Some(record)),
            None => break,
        }
    }
    let (last_offset, last) = (last_record.0, last_record.1.unwrap());
    let entry_at = last_offset
        + immudb_txlog::hotbackup::CONTENT_OFFSET
        + last.transaction().unwrap().entry_offsets()[0];
    let mut corrupted = original.clone();
    let in_value = corrupted.len() - 10;
    corrupted[in_value] ^= 0xff;
    std::fs::write(&path, &corrupted).unwrap();
    for resealed in [false, true] {
        if resealed {
            reseal(&dir, first);
        }
        let report = restore().await;
        assert_eq!(report.exit_code(), 8, "{report}");
        let reason = failure(&report);
        assert!(
            reason.contains(&format!(
                "{first}: record 4 (tx 5) at byte {last_offset}: tx 5: entry 0 at byte {entry_at} does not hash to the header's eH"
            )),
            "resealed {resealed}: {reason}"
        );
    }

    // A flipped byte in tx 3's header, with the manifest resealed: the chain check names it.
    let mut records = RecordReader::new(&original[..]);
    let offset_of_third = {
        records.next().await.unwrap();
        records.next().await.unwrap();
        records.offset() as usize
    };
    let mut corrupted = original.clone();
    corrupted[offset_of_third + 30 + 32 + 8 + 4 + 60] ^= 0x01;
    std::fs::write(&path, &corrupted).unwrap();
    reseal(&dir, first);
    let report = restore().await;
    assert_eq!(report.exit_code(), 8, "{report}");
    let reason = failure(&report);
    assert!(
        reason.contains(&format!("record 2 (tx 3) at byte {offset_of_third}")),
        "{reason}"
    );

    // Truncated: the reader names the record it could not finish.
    std::fs::write(&path, &original[..original.len() - 5]).unwrap();
    reseal(&dir, first);
    let reason = failure(&restore().await);
    assert!(
        reason.contains("record 4 (tx 5)") && reason.contains("file ends inside the record"),
        "{reason}"
    );
    node.with_state(|s| assert!(!s.databases.contains_key("appdb"), "nothing was written"));
}

#[tokio::test]
async fn a_file_of_another_database_and_a_gap_are_refused() {
    let cluster = Cluster::new();
    let (_nodes, dir) = backed_up(&cluster).await;
    let target = Cluster::new();
    let node = target.start_node(0).await;
    // The appdb chain copied under otherdb: its manifests still name appdb.
    std::fs::create_dir_all(dir.join("otherdb")).unwrap();
    let chain = std::fs::read_dir(dir.join("appdb"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::rename(chain.path(), dir.join("otherdb").join(chain.file_name())).unwrap();
    let report = restore_into(&target, &[&dir_flag(&dir), "--databases=otherdb"]).await;
    assert_eq!(report.exit_code(), 8, "{report}");
    assert!(
        failure(&report).contains("a file from another database"),
        "{report}"
    );
    std::fs::rename(dir.join("otherdb").join(chain.file_name()), chain.path()).unwrap();

    // The first object removed: the chain no longer starts at tx 1.
    let first = objects(&dir)[0].clone();
    std::fs::remove_file(dir.join(&first)).unwrap();
    std::fs::remove_file(dir.join(first.replace(".immubackup", ".manifest.json"))).unwrap();
    let report = restore_into(&target, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(report.exit_code(), 8, "{report}");
    assert!(
        failure(&report).contains("starts at tx 6, expected tx 1"),
        "{report}"
    );
    // And a backup does not append to a chain with a gap either.
    let before = files(&dir);
    let report = backup_report_of(&cluster, &[], &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(report.exit_code(), 8, "{report}");
    assert_eq!(files(&dir), before, "nothing written");
    node.with_state(|s| assert!(!s.databases.contains_key("appdb")));
}

#[tokio::test]
async fn restore_refuses_a_database_with_another_history_and_appends_to_its_own() {
    let cluster = Cluster::new();
    let (nodes, dir) = backed_up(&cluster).await;
    let target = Cluster::new();
    let node = target.start_node(0).await;
    node.with_state(|s| {
        let mut db = Database::loaded();
        db.ledger
            .commit(&[(b"mine".to_vec(), b"precious".to_vec())]);
        s.databases.insert("appdb".into(), db);
    });
    let report = restore_into(&target, &[&dir_flag(&dir), "--databases=appdb"]).await;
    assert_eq!(report.exit_code(), 9, "{report}");
    assert!(
        failure(&report).contains("already holds 1 transactions"),
        "{report}"
    );
    let report = restore_into(&target, &[&dir_flag(&dir), "--databases=appdb", "--append"]).await;
    assert_eq!(report.exit_code(), 9, "{report}");
    assert!(
        failure(&report).contains("its history is not the backup's"),
        "{report}"
    );
    node.with_state(|s| {
        assert_eq!(
            s.databases["appdb"].ledger.get(b"mine"),
            Some((1, b"precious".to_vec()))
        )
    });

    // Up to tx 3 into a new name, then appended to the end.
    let report = restore_into(
        &target,
        &[
            &dir_flag(&dir),
            "--databases=appdb",
            "--restore-as=copy",
            "--up-to-tx=3",
        ],
    )
    .await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let at_3 = nodes[0].with_state(|s| {
        s.databases["appdb"]
            .ledger
            .transaction(3)
            .unwrap()
            .header
            .alh()
    });
    assert_eq!(state_of(&node, "copy"), (3, at_3));
    node.with_state(|s| {
        assert_eq!(
            s.databases["copy"].ledger.get(b"k3"),
            None,
            "tx 4 was undone"
        )
    });
    let report = restore_into(
        &target,
        &[
            &dir_flag(&dir),
            "--databases=appdb",
            "--restore-as=copy",
            "--append",
        ],
    )
    .await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(state_of(&node, "copy"), state_of(&nodes[0], "appdb"));
}

#[tokio::test]
async fn rebuild_primary_copies_the_most_advanced_replica() {
    let cluster = Cluster::new();
    let mut nodes = seeded(&cluster, 2, 4).await;
    // Replica 2 stops replicating; replica 1 gets four more transactions.
    nodes[2].with_state(|s| {
        s.databases
            .get_mut("appdb")
            .unwrap()
            .replication
            .primary_host = "nowhere".into()
    });
    write(&nodes[0], 4, 4);
    caught_up(&nodes[0], &nodes[1]).await;
    let expected = state_of(&nodes[0], "appdb");
    assert_eq!(state_of(&nodes[2], "appdb").0, 4);

    // The primary's volume is lost: a new, empty primary at the same address.
    let fresh = restarted_empty(&cluster, nodes.remove(0)).await;
    let report = rebuild_appdb(&cluster, 2).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        completed(&report)[0].starts_with(&format!("rebuilt from {}: tx 1..8", cluster.host(1))),
        "{report}"
    );
    assert_eq!(state_of(&fresh, "appdb"), expected);
    fresh.with_state(|s| assert!(!s.databases["appdb"].replication.replica));

    // A second run refuses: the primary now holds the database.
    let again = rebuild_appdb(&cluster, 2).await;
    assert_eq!(again.exit_code(), 9, "{again}");

    // Converged again (replication user, replica settings), the lagging replica catches up.
    nodes[1].with_state(|s| {
        s.databases
            .get_mut("appdb")
            .unwrap()
            .replication
            .primary_host = cluster.host(0)
    });
    let converged = converge_databases(&cluster, &cluster.replica_hosts(2), &["appdb"]).await;
    assert_eq!(converged.exit_code(), 0, "{converged}");
    write(&fresh, 8, 1);
    caught_up(&fresh, &nodes[0]).await;
    caught_up(&fresh, &nodes[1]).await;
}

/// immudb's /readyz answers on a replica that no longer serves the cluster's history (here a
/// diverged one with a transaction of its own); its agent does not call it Ready, so with
/// `--agent-port` neither `backup` nor `rebuild-primary` reads from it.
#[tokio::test]
async fn a_replica_its_agent_calls_unready_is_never_a_source() {
    let cluster = Cluster::new();
    let mut nodes = seeded(&cluster, 2, 3).await;
    nodes[1].with_state(|s| {
        let db = s.databases.get_mut("appdb").unwrap();
        db.replication.primary_host = "nowhere".into();
        db.ledger.commit(&[(b"own".to_vec(), b"history".to_vec())]);
    });
    let _diverged = cluster.fake_agent(1, false).await;
    let _healthy = cluster.fake_agent(2, true).await;
    let agent_port = format!("--agent-port={AGENT_PORT}");

    let dir = backup_dir(&cluster);
    let report = backup_report_of(
        &cluster,
        &cluster.replica_hosts(2),
        &[&dir_flag(&dir), "--databases=appdb", &agent_port],
    )
    .await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.lines[0].host, cluster.host(2), "{report}");
    assert!(
        completed(&report)[0].starts_with("backed up tx 1..3 "),
        "{report}"
    );

    let expected = state_of(&nodes[0], "appdb");
    let fresh = restarted_empty(&cluster, nodes.remove(0)).await;
    let cli = cluster.cli(
        &cluster.replica_hosts(2),
        10,
        "rebuild-primary",
        &["--databases=appdb", &agent_port],
    );
    let Command::RebuildPrimary(args) = &cli.command else {
        unreachable!()
    };
    let rebuilt = rebuild::rebuild_primary(&args.config(&cli.topology).unwrap()).await;
    assert_eq!(rebuilt.exit_code(), 0, "{rebuilt}");
    assert!(
        completed(&rebuilt)[0].starts_with(&format!("rebuilt from {}: tx 1..3", cluster.host(2))),
        "{rebuilt}"
    );
    assert_eq!(state_of(&fresh, "appdb"), expected);
}

#[tokio::test]
async fn retention_keeps_the_newest_chains_and_never_the_only_one() {
    let cluster = Cluster::new();
    let nodes = seeded(&cluster, 0, 2).await;
    let dir = backup_dir(&cluster);
    let flag = dir_flag(&dir);
    let chains = || {
        let mut ids: Vec<String> = std::fs::read_dir(dir.join("appdb"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        ids.sort();
        ids
    };
    for round in 0..3u8 {
        write(&nodes[0], 10 + round, 1);
        let report = backup_report_of(
            &cluster,
            &[],
            &[&flag, "--databases=appdb", "--full", "--keep-chains=2"],
        )
        .await;
        assert_eq!(report.exit_code(), 0, "{report}");
    }
    let kept = chains();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let report = backup_report_of(
        &cluster,
        &[],
        &[&flag, "--databases=appdb", "--keep-chains=1"],
    )
    .await;
    assert!(
        completed(&report)[0].contains(&format!("retention deleted chain(s) {}", kept[0])),
        "{report}"
    );
    assert_eq!(chains(), [kept[1].clone()], "the newest chain stays");
    let target = Cluster::new();
    let node = target.start_node(0).await;
    assert_eq!(
        restore_into(&target, &[&flag, "--databases=appdb"])
            .await
            .exit_code(),
        0
    );
    assert_eq!(state_of(&node, "appdb"), state_of(&nodes[0], "appdb"));
}

#[tokio::test]
async fn with_no_replica_ready_the_backup_reads_the_primary() {
    let cluster = Cluster::new();
    let nodes = seeded(&cluster, 0, 3).await;
    let dir = backup_dir(&cluster);
    // Replica 1 is listed but never starts: after the wait for a replica, the primary is read.
    let cli = cluster.cli(
        &cluster.replica_hosts(1),
        2,
        "backup",
        &[&dir_flag(&dir), "--databases=appdb"],
    );
    let Command::Backup(args) = &cli.command else {
        unreachable!()
    };
    let report = run::backup(&args.config(&cli.topology).unwrap()).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.lines[0].host, cluster.host(0));
    assert!(
        completed(&report)[0].starts_with("backed up tx 1..3 "),
        "{report}"
    );
    assert_eq!(
        verified_records(&dir, "appdb").await,
        nodes[0].with_state(|s| s.databases["appdb"].tx_count())
    );
}

#[tokio::test]
async fn a_restore_left_in_replica_mode_is_continued_with_append() {
    let cluster = Cluster::new();
    let (nodes, dir) = backed_up(&cluster).await;
    let target = Cluster::new();
    let node = target.start_node(0).await;
    let flag = dir_flag(&dir);
    let partial = restore_into(&target, &[&flag, "--databases=appdb", "--up-to-tx=6"]).await;
    assert_eq!(partial.exit_code(), 0, "{partial}");
    // As a restore that stopped after tx 6 leaves it: read-only, in the external-replica form.
    node.with_state(|s| s.databases.get_mut("appdb").unwrap().replication.replica = true);
    let refused = restore_into(&target, &[&flag, "--databases=appdb"]).await;
    assert_eq!(refused.exit_code(), 9, "{refused}");
    let resumed = restore_into(&target, &[&flag, "--databases=appdb", "--append"]).await;
    assert_eq!(resumed.exit_code(), 0, "{resumed}");
    assert!(
        completed(&resumed)[0].starts_with("restored tx 7..8 "),
        "{resumed}"
    );
    assert_eq!(state_of(&node, "appdb"), state_of(&nodes[0], "appdb"));
    node.with_state(|s| assert!(!s.databases["appdb"].replication.replica));
}

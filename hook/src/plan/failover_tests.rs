//! Failover's decisions, one situation per test.

use super::*;

const TIMING: Timing = Timing {
    lease_duration: Duration::from_secs(15),
    poll_interval: Duration::from_secs(5),
    call_timeout: Duration::from_secs(2),
    cooldown: Duration::from_secs(120),
};

fn at(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn lease(holder: &str, version: &str) -> LeaseRecord {
    LeaseRecord {
        holder: Some(holder.into()),
        acquired: None,
        transitions: 0,
        version: version.into(),
    }
}

fn position(counts: &[(&str, u64)], writable: bool) -> Position {
    Position {
        transactions: counts
            .iter()
            .map(|(db, tx)| {
                let t = TxPosition {
                    precommitted: *tx,
                    committed: *tx,
                };
                (db.to_string(), t)
            })
            .collect(),
        writable,
        fenced: false,
        replicating: match writable {
            true => BTreeSet::new(),
            false => counts.iter().map(|(db, _)| db.to_string()).collect(),
        },
    }
}

fn peer(host: &str, counts: Option<&[(&str, u64)]>) -> Peer {
    Peer {
        host: host.into(),
        position: counts.map(|c| position(c, false)),
    }
}

/// Rules with `acks` synchronous acknowledgements.
fn rules(acks: u32) -> ElectionRules {
    ElectionRules {
        acks: Some(acks),
        allow_data_loss: false,
        preferred: "p0".into(),
        eligible: ["p0", "r0", "r1"].into_iter().map(String::from).collect(),
    }
}

#[test]
fn no_lease_or_no_holder_is_free() {
    let mut memory = LeaseMemory::default();
    assert_eq!(observe(None, &mut memory, at(0), &TIMING), LeaseState::Free);
    let empty = LeaseRecord {
        version: "1".into(),
        ..Default::default()
    };
    assert_eq!(
        observe(Some(&empty), &mut memory, at(100), &TIMING),
        LeaseState::Free
    );
}

#[test]
fn a_lease_expires_a_whole_duration_after_this_agent_first_saw_its_version() {
    let mut memory = LeaseMemory::default();
    let held = |holder: &str| LeaseState::Held {
        holder: holder.into(),
    };
    // An agent that starts late still waits a whole duration: it cannot know when the holder
    // last renewed.
    assert_eq!(
        observe(Some(&lease("p0", "7")), &mut memory, at(100), &TIMING),
        held("p0")
    );
    assert_eq!(
        observe(Some(&lease("p0", "7")), &mut memory, at(114), &TIMING),
        held("p0")
    );
    assert_eq!(
        observe(Some(&lease("p0", "7")), &mut memory, at(115), &TIMING),
        LeaseState::Expired {
            holder: "p0".into()
        }
    );
    // A renew (a new version) starts the count again.
    assert_eq!(
        observe(Some(&lease("p0", "8")), &mut memory, at(116), &TIMING),
        held("p0")
    );
    assert_eq!(
        observe(Some(&lease("p0", "8")), &mut memory, at(130), &TIMING),
        held("p0")
    );
}

#[test]
fn a_primary_restart_within_the_lease_is_not_a_failover() {
    // The primary's pod restarts: no renew for 12 s, then its new agent renews (same identity).
    let mut replica = LeaseMemory::default();
    for t in [0, 5, 10] {
        assert!(matches!(
            observe(Some(&lease("p0", "1")), &mut replica, at(t), &TIMING),
            LeaseState::Held { .. }
        ));
    }
    let state = observe(Some(&lease("p0", "2")), &mut replica, at(12), &TIMING);
    assert_eq!(
        lease_step("r0", &state, None, SystemTime::now(), &TIMING),
        LeaseStep::Follow {
            primary: "p0".into()
        }
    );
    // The restarted holder renews its own Lease, even if it had expired meanwhile.
    let expired = LeaseState::Expired {
        holder: "p0".into(),
    };
    assert_eq!(
        lease_step("p0", &expired, None, SystemTime::now(), &TIMING),
        LeaseStep::Renew
    );
}

#[test]
fn fencing_happens_before_any_agent_can_see_the_lease_expire() {
    // The holder renews at 0 and then never again; its polls come every interval, each one late
    // by up to a call timeout. An observer that saw the renewed version at once (the earliest
    // possible) calls the Lease expired at lease_duration.
    for delay_ms in [0, 500, 1_999] {
        let mut holder = LeaseMemory::default();
        holder.renewed("1", at(0));
        let mut observer = LeaseMemory::default();
        observe(Some(&lease("p0", "1")), &mut observer, at(0), &TIMING);
        let polls = (1..).map(|n| TIMING.poll_interval * n + Duration::from_millis(delay_ms));
        let fenced_at = polls
            .take(10)
            .find(|&t| holder.fence_due(t, &TIMING))
            .expect("fences");
        let expired_at = (0..100)
            .map(|ms| Duration::from_millis(ms * 250))
            .find(|&t| {
                matches!(
                    observe(Some(&lease("p0", "1")), &mut observer, t, &TIMING),
                    LeaseState::Expired { .. }
                )
            })
            .unwrap();
        assert!(
            fenced_at + TIMING.call_timeout <= expired_at,
            "fenced at {fenced_at:?} (+ a call), expired at {expired_at:?}"
        );
        assert!(
            fenced_at > TIMING.poll_interval,
            "one failed renew is retried before fencing"
        );
    }
}

#[test]
fn an_agent_that_never_renewed_since_it_started_is_fenced() {
    let mut memory = LeaseMemory::default();
    assert!(memory.fence_due(at(0), &TIMING));
    memory.renewed("3", at(10));
    assert!(!memory.fence_due(at(17), &TIMING));
    assert!(memory.fence_due(at(18), &TIMING));
    memory.renewed("4", at(18));
    assert!(!memory.fence_due(at(18), &TIMING));
    memory.lost();
    assert!(memory.fence_due(at(18), &TIMING));
}

#[test]
fn a_holder_serves_until_the_fence_time_after_its_last_renew_was_sent() {
    let mut memory = LeaseMemory::default();
    assert_eq!(memory.serving_until(&TIMING), None);
    memory.renewed("3", at(10));
    assert_eq!(memory.renewed_at(), Some(at(10)));
    // 15 s lease, less a poll (5 s) and a call (2 s).
    assert_eq!(memory.serving_until(&TIMING), Some(at(18)));
    memory.lost();
    assert_eq!(memory.serving_until(&TIMING), None);
}

#[test]
fn steps_follow_the_holder() {
    let now = SystemTime::now();
    let held = |h: &str| LeaseState::Held { holder: h.into() };
    assert_eq!(
        lease_step("p0", &held("p0"), None, now, &TIMING),
        LeaseStep::Renew
    );
    assert_eq!(
        lease_step("r0", &held("p0"), None, now, &TIMING),
        LeaseStep::Follow {
            primary: "p0".into()
        }
    );
    assert_eq!(
        lease_step("r0", &LeaseState::Free, None, now, &TIMING),
        LeaseStep::Elect { previous: None }
    );
}

#[test]
fn a_failover_is_not_followed_by_another_within_the_cooldown() {
    let now = SystemTime::now();
    let expired = LeaseState::Expired {
        holder: "r0".into(),
    };
    let after_failover = |ago: u64| LeaseRecord {
        holder: Some("r0".into()),
        acquired: Some(now - at(ago)),
        transitions: 1,
        version: "9".into(),
    };
    assert_eq!(
        lease_step("r1", &expired, Some(&after_failover(30)), now, &TIMING),
        LeaseStep::Cooldown {
            previous: "r0".into(),
            left: at(90)
        }
    );
    assert_eq!(
        lease_step("r1", &expired, Some(&after_failover(120)), now, &TIMING),
        LeaseStep::Elect {
            previous: Some("r0".into())
        }
    );
    // The first acquisition (at install, or when failover was turned on) is not a failover.
    let first = LeaseRecord {
        transitions: 0,
        ..after_failover(1)
    };
    assert_eq!(
        lease_step("r1", &expired, Some(&first), now, &TIMING),
        LeaseStep::Elect {
            previous: Some("r0".into())
        }
    );
}

#[test]
fn quorum_makes_every_acknowledged_write_present_among_those_that_answer() {
    // 2 replicas, 1 ack: an acknowledged write may be on one of them only: both must answer.
    assert_eq!(quorum(2, 1), 2);
    assert_eq!(quorum(3, 1), 3);
    assert_eq!(quorum(3, 2), 2);
    assert_eq!(quorum(1, 3), 1);
}

#[test]
fn the_most_advanced_replica_wins_comparing_every_database() {
    let mine = position(&[("appdb", 10), ("audit", 5)], false);
    let behind = peer("r1", Some(&[("appdb", 9), ("audit", 5)]));
    assert_eq!(
        elect(
            "r0",
            &mine,
            Some("p0"),
            &[behind, peer("p0", None)],
            &rules(1)
        ),
        Election::Take
    );
    let ahead = peer("r1", Some(&[("appdb", 10), ("audit", 6)]));
    assert_eq!(
        elect(
            "r0",
            &mine,
            Some("p0"),
            &[ahead, peer("p0", None)],
            &rules(1)
        ),
        Election::Defer { to: "r1".into() }
    );
}

#[test]
fn ties_go_to_the_preferred_pod_then_the_lowest_name() {
    let equal: &[(&str, u64)] = &[("appdb", 4)];
    let mine = position(equal, false);
    assert_eq!(
        elect(
            "r1",
            &mine,
            Some("p0"),
            &[peer("r0", Some(equal))],
            &rules(1)
        ),
        Election::Defer { to: "r0".into() }
    );
    assert_eq!(
        elect(
            "r0",
            &mine,
            Some("p0"),
            &[peer("r1", Some(equal))],
            &rules(1)
        ),
        Election::Take
    );
    // A fresh install: everything empty, the primary StatefulSet's pod is elected.
    let empty = position(&[("appdb", 0)], false);
    let peers = [
        peer("p0", Some(&[("appdb", 0)])),
        peer("r1", Some(&[("appdb", 0)])),
    ];
    assert_eq!(
        elect("r0", &empty, None, &peers, &rules(1)),
        Election::Defer { to: "p0".into() }
    );
}

#[test]
fn a_pod_that_still_accepts_writes_blocks_the_election() {
    let mine = position(&[("appdb", 10)], false);
    let writable = Peer {
        host: "p0".into(),
        position: Some(position(&[("appdb", 10)], true)),
    };
    let election = elect(
        "r0",
        &mine,
        None,
        std::slice::from_ref(&writable),
        &rules(1),
    );
    assert!(
        matches!(&election, Election::Wait(why) if why.contains("p0 still accepts writes")),
        "{election:?}"
    );
    // Failover turned on for a running release: the writable primary itself wins the tie.
    let primary_view = position(&[("appdb", 10)], true);
    assert_eq!(
        elect(
            "p0",
            &primary_view,
            None,
            &[peer("r0", Some(&[("appdb", 10)]))],
            &rules(1)
        ),
        Election::Take
    );
}

#[test]
fn too_few_answers_wait_instead_of_risking_an_acknowledged_write() {
    let mine = position(&[("appdb", 10)], false);
    // The old primary p0 acknowledged nothing; r0 and r1 did, with 1 ack both must answer.
    let election = elect(
        "r0",
        &mine,
        Some("p0"),
        &[peer("r1", None), peer("p0", None)],
        &rules(1),
    );
    assert!(
        matches!(&election, Election::Wait(why) if why.contains("1 of 2 pods that may hold acknowledged writes answered, 2 must") && why.contains("r1, p0")),
        "{election:?}"
    );
    // With 2 acks of 2 replicas, either one holds every acknowledged write.
    assert_eq!(
        elect(
            "r0",
            &mine,
            Some("p0"),
            &[peer("r1", None), peer("p0", None)],
            &rules(2)
        ),
        Election::Take
    );
}

#[test]
fn a_fenced_former_primary_is_no_candidate_and_no_acknowledger() {
    let mut fenced = position(&[("appdb", 12)], false);
    fenced.fenced = true;
    let mine = position(&[("appdb", 10)], false);
    let peers = [Peer {
        host: "p0".into(),
        position: Some(fenced.clone()),
    }];
    // r0 alone may hold acknowledged writes (r1 left with the second primary): it takes over,
    // though the fenced p0 counts more transactions, which may belong to a split-off history.
    assert_eq!(
        elect(
            "r0",
            &mine,
            Some("r1"),
            &[peers[0].clone(), peer("r1", None)],
            &rules(1)
        ),
        Election::Take
    );
    assert!(matches!(
        elect(
            "p0",
            &fenced,
            Some("r1"),
            &[peer("r0", Some(&[("appdb", 10)]))],
            &rules(1)
        ),
        Election::Wait(_)
    ));
}

#[test]
fn when_nobody_holds_everything_only_allow_data_loss_elects() {
    let mine = position(&[("appdb", 10), ("audit", 4)], false);
    let other = [peer("r1", Some(&[("appdb", 9), ("audit", 6)]))];
    let election = elect("r0", &mine, Some("p0"), &other, &rules(1));
    assert!(
        matches!(&election, Election::Wait(why) if why.contains("r0: appdb=10 audit=4; r1: appdb=9 audit=6")),
        "{election:?}"
    );
    let lossy = ElectionRules {
        allow_data_loss: true,
        ..rules(1)
    };
    assert_eq!(
        elect("r0", &mine, Some("p0"), &other, &lossy),
        Election::Defer { to: "r1".into() },
        "15 transactions beat 14"
    );
}

#[test]
fn a_pod_beyond_the_bound_counts_and_decides_but_is_never_elected() {
    // r2 was added by `kubectl scale` beyond failover.maxReplicas: it replicates and may have
    // acknowledged writes, so with 3 pods that may hold them and 1 ack, all 3 must answer.
    let mine = position(&[("appdb", 10)], false);
    let election = elect(
        "r0",
        &mine,
        Some("p0"),
        &[peer("r1", Some(&[("appdb", 10)])), peer("r2", None)],
        &rules(1),
    );
    assert!(
        matches!(&election, Election::Wait(why) if why.contains("2 of 3 pods") && why.contains("no answer from r2")),
        "{election:?}"
    );
    // It answers and holds no more: an eligible pod is elected, never r2 itself.
    let equal = [
        peer("r1", Some(&[("appdb", 10)])),
        peer("r2", Some(&[("appdb", 10)])),
    ];
    assert_eq!(
        elect("r0", &mine, Some("p0"), &equal, &rules(1)),
        Election::Take
    );
    assert_eq!(
        elect(
            "r2",
            &mine,
            Some("p0"),
            &[
                peer("r0", Some(&[("appdb", 10)])),
                peer("r1", Some(&[("appdb", 10)]))
            ],
            &rules(1)
        ),
        Election::Defer { to: "r0".into() }
    );
    // It alone holds the last acknowledged write: nobody is elected rather than lose it.
    let ahead = [
        peer("r1", Some(&[("appdb", 10)])),
        peer("r2", Some(&[("appdb", 11)])),
    ];
    let election = elect("r0", &mine, Some("p0"), &ahead, &rules(1));
    assert!(
        matches!(&election, Election::Wait(why) if why.contains("only r2 hold(s) the latest transaction")),
        "{election:?}"
    );
    // With allowDataLoss the most advanced eligible pod is elected.
    let lossy = ElectionRules {
        allow_data_loss: true,
        ..rules(1)
    };
    assert_eq!(
        elect("r0", &mine, Some("p0"), &ahead, &lossy),
        Election::Take
    );
}

#[test]
fn precommitted_transactions_decide_because_replicas_acknowledge_them() {
    let mut mine = position(&[("appdb", 10)], false);
    mine.transactions.get_mut("appdb").unwrap().committed = 8;
    let other = [peer("r1", Some(&[("appdb", 9)]))];
    assert_eq!(
        elect("r0", &mine, Some("p0"), &other, &rules(1)),
        Election::Take
    );
}

#[test]
fn lost_transactions_are_what_the_primary_had_beyond_the_new_primary() {
    let seen = BTreeMap::from([("appdb".to_string(), 12), ("audit".to_string(), 3)]);
    let mine = position(&[("appdb", 10), ("audit", 3)], false).transactions;
    assert_eq!(
        lost_transactions(&seen, &mine),
        BTreeMap::from([("appdb".to_string(), 2), ("audit".to_string(), 0)])
    );
}

#[test]
fn a_returning_primary_follows_when_its_history_is_a_prefix() {
    let alh = [7; 32];
    let history = |local, primary_committed, theirs| History {
        local: (local, alh),
        primary_committed,
        primary_alh_at_local: theirs,
    };
    assert_eq!(rejoin(&history(0, 5, None)), Rejoin::Follow);
    assert_eq!(rejoin(&history(5, 9, Some(alh))), Rejoin::Follow);
    assert_eq!(rejoin(&history(5, 5, Some(alh))), Rejoin::Follow);
    let ahead = rejoin(&history(7, 5, None));
    assert!(
        matches!(&ahead, Rejoin::Diverged(why) if why.contains("the 2 after it exist only here")),
        "{ahead:?}"
    );
    assert!(matches!(
        rejoin(&history(5, 9, Some([8; 32]))),
        Rejoin::Diverged(_)
    ));
    assert!(matches!(rejoin(&history(5, 9, None)), Rejoin::Diverged(_)));
}

fn replica_desired(sync: bool) -> ReplicaDesired {
    ReplicaDesired {
        databases: vec![
            crate::plan::DesiredDatabase::named("appdb"),
            crate::plan::DesiredDatabase::named("audit"),
        ],
        primary_host: "db-immudb-primary".into(),
        primary_port: 3322,
        replication_user: "replicator".into(),
        replication_password: crate::types::Secret::new("pw"),
        options: crate::plan::ReplicaOptions {
            sync_replication: sync,
            allow_tx_discarding: true,
            replication_commit_concurrency: 30,
            prefetch_tx_buffer_size: 100,
            ..Default::default()
        },
    }
}

fn observed_db(name: &str, replication: ReplicationSettings) -> ObservedDatabase {
    ObservedDatabase {
        name: name.into(),
        replication,
        storage: StorageSettings::default(),
        loaded: true,
        tx_count: 3,
    }
}

fn replication_of(action: &Action) -> (&str, ReplicationSettings) {
    match action {
        Action::UpdateDatabase {
            name,
            replication: Some(r),
            storage,
        } if storage.is_empty() => (name, r.clone()),
        other => panic!("not a replication update: {other:?}"),
    }
}

#[test]
fn a_new_primary_commits_what_it_holds_before_it_turns_synchronous() {
    let desired = PrimaryDesired {
        databases: vec![
            crate::plan::DesiredDatabase::named("appdb"),
            crate::plan::DesiredDatabase::named("audit"),
        ],
        sync_acks: Some(1),
        replication_user: "replicator".into(),
    };
    let observed = Observed {
        databases: vec![
            observed_db("appdb", replica_desired(true).replication("appdb")),
            observed_db("audit", ReplicationSettings::default()),
        ],
        users: vec![],
    };
    let actions: Vec<_> = promotions(&desired, &observed)
        .iter()
        .map(|a| {
            let (name, r) = replication_of(a);
            (name.to_string(), r)
        })
        .collect();
    let sync = ReplicationSettings {
        sync_replication: true,
        sync_acks: 1,
        ..Default::default()
    };
    assert_eq!(
        actions,
        vec![
            ("appdb".to_string(), ReplicationSettings::default()),
            ("appdb".to_string(), sync),
        ],
        "audit is writable already"
    );
}

#[test]
fn a_pod_without_the_lease_fences_its_writable_databases_keeping_sync_on() {
    let desired = replica_desired(true);
    let observed = Observed {
        databases: vec![
            observed_db("appdb", ReplicationSettings::default()),
            observed_db("audit", desired.replication("audit")),
        ],
        users: vec![],
    };
    let actions = fences(&desired, &observed);
    assert_eq!(actions.len(), 1);
    let (name, fence) = replication_of(&actions[0]);
    assert_eq!(name, "appdb");
    assert!(fence.replica && fence.sync_replication && fence.primary_host.is_empty());
    assert_eq!(fence.sync_acks, 0, "immudb refuses acks on a replica");
    assert_eq!(
        (
            fence.prefetch_tx_buffer_size,
            fence.replication_commit_concurrency
        ),
        (100, 30),
        "immudb refuses a replica without them, also one that follows nobody"
    );
    assert!(is_fenced(&observed_db("appdb", fence)));
    assert!(!is_fenced(&observed_db(
        "audit",
        desired.replication("audit")
    )));
    let (_, followed) = replication_of(&follow(&desired, "appdb"));
    assert_eq!(followed, desired.replication("appdb"));
    assert!(followed.allow_tx_discarding);
}

//! The election's decisions, one situation per test.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

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

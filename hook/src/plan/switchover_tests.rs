use super::*;
use crate::plan::failover::TxPosition;

const LIMIT: Duration = Duration::from_secs(40);

fn position(held: u64) -> Position {
    Position {
        transactions: [(
            "appdb".to_string(),
            TxPosition {
                precommitted: held,
                committed: held,
            },
        )]
        .into(),
        writable: false,
        fenced: false,
        replicating: ["appdb".to_string()].into(),
    }
}

fn member(host: &str, revision: Revision, ready: bool, held: u64) -> Member {
    Member {
        host: host.into(),
        eligible: true,
        position: Some(position(held)),
        version: Some("1.11.1".into()),
        ready,
        stopping: false,
        revision,
        rolled_after_me: false,
    }
}

/// [`when`] at the start of a stop (or of a rollout's look).
fn at_once(me: &Me, members: &[Member]) -> When {
    when(me, members, Duration::ZERO, LIMIT)
}

fn me(revision: Revision, stopping: bool) -> Me {
    Me {
        version: "1.11.1".into(),
        revision,
        stopping,
    }
}

#[test]
fn a_primary_stopped_outside_a_rollout_hands_over_at_once() {
    let members = [
        member("read-0", Revision::Settled, true, 5),
        member("read-1", Revision::Settled, false, 5),
    ];
    assert!(matches!(
        at_once(&me(Revision::Settled, true), &members),
        When::Now(_)
    ));
    assert_eq!(at_once(&me(Revision::Settled, false), &members), When::Stay);
}

#[test]
fn a_stopping_primary_waits_until_the_rollout_reached_every_other_pod() {
    let stopping = me(Revision::Outdated, true);
    let mut members = vec![
        member("read-0", Revision::Outdated, true, 5),
        member("read-1", Revision::Updated, false, 5),
    ];
    assert_eq!(
        when(&stopping, &members, Duration::from_secs(3), LIMIT),
        When::Wait(
            "read-0 runs the old revision; read-1 runs the new revision, not Ready yet".into()
        )
    );
    members[1].ready = true;
    members[0].revision = Revision::Missing;
    members[0].position = None;
    assert_eq!(
        when(&stopping, &members, Duration::from_secs(10), LIMIT),
        When::Wait("read-0 is being recreated".into())
    );
    members[0] = member("read-0", Revision::Updated, true, 5);
    assert!(matches!(
        when(&stopping, &members, Duration::from_secs(20), LIMIT),
        When::Now(_)
    ));
    // Not stopping: a rollout of the others alone never moves the role.
    assert_eq!(
        at_once(&me(Revision::Outdated, false), &members),
        When::Stay
    );
}

#[test]
fn a_pod_its_statefulset_rolls_after_this_one_is_not_waited_for_and_not_preferred() {
    // The primary is read-1: its StatefulSet restarts it first, read-0 only after it.
    let stopping = me(Revision::Outdated, true);
    let mut read_0 = member("read-0", Revision::Outdated, true, 9);
    read_0.rolled_after_me = true;
    let mut primary_0 = member("primary-0", Revision::Missing, false, 0);
    primary_0.position = None;
    let mut members = vec![read_0, primary_0];
    assert_eq!(
        at_once(&stopping, &members),
        When::Wait("primary-0 is being recreated".into())
    );
    members[1] = member("primary-0", Revision::Updated, true, 7);
    assert!(matches!(at_once(&stopping, &members), When::Now(_)));
    assert_eq!(
        target(&stopping, &members).unwrap().host,
        "primary-0",
        "read-0 will be restarted after this pod: the role would move twice"
    );
}

#[test]
fn the_wait_for_the_rollout_is_bounded() {
    let members = [member("read-0", Revision::Outdated, true, 5)];
    let stopping = me(Revision::Outdated, true);
    assert!(matches!(
        when(&stopping, &members, LIMIT - Duration::from_millis(1), LIMIT),
        When::Wait(_)
    ));
    assert_eq!(
        when(&stopping, &members, LIMIT, LIMIT),
        When::Now("waited 40 s for the rollout, the limit: read-0 runs the old revision".into())
    );
}

#[test]
fn a_pod_on_another_immudb_version_that_the_rollout_waits_for_gets_the_role_at_once() {
    let mut blocked = member("read-1", Revision::Updated, false, 3);
    blocked.version = Some("1.11.2".into());
    let members = vec![member("read-0", Revision::Outdated, true, 5), blocked];
    let expected = When::Now(
        "read-1 runs immudb 1.11.2 on the new revision and cannot follow this primary's 1.11.1: the rollout waits for it".into(),
    );
    // Stopping or not, as long as this pod is due to be restarted itself.
    assert_eq!(at_once(&me(Revision::Outdated, true), &members), expected);
    assert_eq!(at_once(&me(Revision::Outdated, false), &members), expected);
    assert_eq!(at_once(&me(Revision::Settled, false), &members), When::Stay);
    // It is the target, though not Ready and behind: the rollout will restart read-0.
    let stopping = me(Revision::Outdated, true);
    assert_eq!(target(&stopping, &members).unwrap().host, "read-1");
}

#[test]
fn the_target_runs_the_new_revision_then_is_ready_then_holds_the_most() {
    let stopping = me(Revision::Outdated, true);
    let members = vec![
        member("read-0", Revision::Outdated, true, 9),
        member("read-1", Revision::Updated, true, 4),
        member("read-2", Revision::Updated, true, 6),
    ];
    assert_eq!(target(&stopping, &members).unwrap().host, "read-2");
    let members = vec![
        member("read-0", Revision::Settled, true, 6),
        member("read-1", Revision::Settled, true, 6),
    ];
    assert_eq!(
        target(&me(Revision::Settled, true), &members).unwrap().host,
        "read-0",
        "ties: the lowest name"
    );
}

#[test]
fn no_target_is_a_pod_that_may_not_or_cannot_take_over() {
    let stopping = me(Revision::Settled, true);
    let mut beyond = member("read-5", Revision::Settled, true, 9);
    beyond.eligible = false;
    let mut leaving = member("read-1", Revision::Settled, true, 9);
    leaving.stopping = true;
    let mut silent = member("read-2", Revision::Settled, true, 9);
    silent.position = None;
    let mut fenced = member("read-3", Revision::Settled, true, 9);
    fenced.position.as_mut().unwrap().fenced = true;
    let unready = member("read-0", Revision::Settled, false, 9);
    let members = [beyond, leaving, silent, fenced, unready];
    assert_eq!(
        target(&stopping, &members),
        Err("no pod may take over (read-5: beyond failover.maxReplicas; read-1: stopping; read-2: its immudb does not answer; read-3: fenced; read-0: not Ready)".into())
    );
    assert_eq!(target(&stopping, &[]), Err("no other pod".into()));
}

#[test]
fn the_target_lacks_what_it_holds_neither_committed_nor_precommitted() {
    let committed: BTreeMap<String, u64> =
        [("appdb".to_string(), 10), ("audit".to_string(), 4)].into();
    let mut target = position(7);
    target.transactions.insert(
        "audit".into(),
        TxPosition {
            precommitted: 4,
            committed: 3,
        },
    );
    assert_eq!(
        lacking(&committed, &target),
        [("appdb".to_string(), (8, 10))].into()
    );
    // A database it does not hold at all: everything.
    let empty = Position::default();
    assert_eq!(
        lacking(&committed, &empty),
        [
            ("appdb".to_string(), (1, 10)),
            ("audit".to_string(), (1, 4))
        ]
        .into()
    );
}

//! The Lease's decisions, one situation per test.

use std::time::{Duration, SystemTime};

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

//! Whether a replicating database keeps up with its primary, pure: current, catching up, lagging
//! or stalled, and when the agent wakes its replicator.
//!
//! immudb's asynchronous replicator counts the primary's "no new transactions" as a failure and
//! sleeps `min(1 s x 2^n, 2 min)` (less up to 10 %) after the n-th in a row (immudb 1.11.1
//! pkg/replication/replicator.go, `(*TxReplicator).handleError`; delayer.go,
//! `(*expBackoff).DelayAfter`; options.go, `DefaultOptions`): after a quiet period a write waits
//! up to 2 minutes. Only a stop ends the sleep; an UpdateDatabaseV2 that carries replication
//! settings stops the replicator and starts it again (immudb 1.11.1 pkg/server/server.go,
//! `UpdateDatabaseV2`). A synchronous replica never sleeps this way: its primary answers an empty
//! fetch without failing.
//!
//! So the agent wakes an asynchronous replica database that lacks transactions and has not
//! advanced for longer than immudb's first sleep (2 s): one catching up advances between two
//! looks, and one that just found nothing fetches again within 2 s by itself. A wake costs immudb
//! a write into systemdb and a replicator login on the primary; one that did not make the replica
//! advance is repeated only after a doubling wait.

use std::time::Duration;

use super::lag::{Lag, LagTracker};

/// The agent's bounds for a replicating database.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// Ready only while the replica holds everything the primary had this long ago.
    pub max_lag: Duration,
    /// Lacking transactions without advancing this long is `stalled` (not Ready).
    pub stall_after: Duration,
    /// Lacking transactions without advancing this long gets an asynchronous replicator woken.
    pub wake_after: Duration,
    /// First and longest wait before waking again a replicator the last wake did not move.
    pub wake_backoff: (Duration, Duration),
}

/// Who keeps a replica database's replicator fetching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// Synchronous replication: the replicator never sleeps.
    Sync,
    /// Asynchronous, and the agent wakes it.
    Agent,
    /// Asynchronous, left to immudb's backoff: systemdb mode, where immudb refuses any update of
    /// the replicated defaultdb (so a replica may be up to 2 minutes behind; `max_lag` bounds it).
    Immudb,
}

/// Who keeps a replica database fetching: immudb refuses every update in systemdb mode
/// (`manage` false), so the agent cannot wake it there.
pub fn driver(sync_replication: bool, manage: bool) -> Driver {
    match (sync_replication, manage) {
        (true, _) => Driver::Sync,
        (false, true) => Driver::Agent,
        (false, false) => Driver::Immudb,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Motion {
    /// Within the bounds.
    Current,
    /// Still short of what the primary had when the agent first reached it, and advancing.
    CatchingUp,
    /// Advancing, but lacks a transaction the primary has had longer than `max_lag`.
    Lagging,
    /// Lacks transactions and has not advanced for `stall_after`.
    Stalled,
}

/// What one look at a replicating database decides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judgement {
    pub motion: Motion,
    /// Wake its replicator now.
    pub wake: bool,
}

/// What the agent remembers of one replica database between looks.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub lag: LagTracker,
    /// The last wake: when, and the transaction the replica held then.
    woken: Option<(Duration, u64)>,
    /// The wait after the last wake before another, while the replica does not advance.
    wake_delay: Duration,
}

impl Progress {
    /// Judges a database whose replicator runs against a reachable primary of the same version,
    /// holding `replica_tx` with `lag` (from `self.lag`, measured at `now`).
    pub fn judge(
        &mut self,
        now: Duration,
        lag: &Lag,
        replica_tx: u64,
        driver: Driver,
        bounds: &Bounds,
    ) -> Judgement {
        if self.woken.is_some_and(|(_, held)| replica_tx != held) {
            self.woken = None;
            self.wake_delay = Duration::ZERO;
        }
        let kept_current = driver != Driver::Immudb;
        let motion = if kept_current && lag.stuck_seconds > bounds.stall_after.as_secs_f64() {
            Motion::Stalled
        } else if lag.catching_up {
            Motion::CatchingUp
        } else if lag.seconds > bounds.max_lag.as_secs_f64() {
            Motion::Lagging
        } else {
            Motion::Current
        };
        let wake = driver == Driver::Agent
            && lag.transactions > 0
            && self.lag.unmoved_for(now) >= bounds.wake_after
            && self.wake_due(now, replica_tx, bounds.wake_backoff);
        Judgement { motion, wake }
    }

    /// Whether a wake may be sent now; if so, it is recorded as sent.
    fn wake_due(
        &mut self,
        now: Duration,
        replica_tx: u64,
        (first, longest): (Duration, Duration),
    ) -> bool {
        if let Some((at, _)) = self.woken {
            if now < at + self.wake_delay {
                return false;
            }
        }
        self.wake_delay = match self.woken {
            None => first,
            Some(_) => (self.wake_delay * 2).clamp(first, longest),
        };
        self.woken = Some((now, replica_tx));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        max_lag: Duration::from_secs(180),
        stall_after: Duration::from_secs(10),
        wake_after: Duration::from_secs(2),
        wake_backoff: (Duration::from_secs(10), Duration::from_secs(300)),
    };

    fn at(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    /// One look: the primary and the replica at `now`.
    fn look(
        progress: &mut Progress,
        now: u64,
        primary_tx: u64,
        replica_tx: u64,
        driver: Driver,
    ) -> Judgement {
        progress.lag.observe_primary(at(now), primary_tx);
        let lag = progress.lag.lag(at(now), replica_tx).unwrap();
        progress.judge(at(now), &lag, replica_tx, driver, &BOUNDS)
    }

    fn quiet_for_an_hour(driver: Driver) -> Progress {
        let mut progress = Progress::default();
        for t in [0, 1800, 3600] {
            let judged = look(&mut progress, t, 7, 7, driver);
            assert_eq!(judged.motion, Motion::Current);
            assert!(!judged.wake, "a replica that lacks nothing is never woken");
        }
        progress
    }

    #[test]
    fn a_write_after_a_quiet_period_wakes_an_idle_async_replica_at_the_first_look() {
        let mut progress = quiet_for_an_hour(Driver::Agent);
        let judged = look(&mut progress, 3601, 8, 7, Driver::Agent);
        assert_eq!(
            judged,
            Judgement {
                motion: Motion::Current,
                wake: true
            }
        );
        // It moved: nothing more to do.
        let judged = look(&mut progress, 3602, 8, 8, Driver::Agent);
        assert!(!judged.wake);
    }

    #[test]
    fn a_replica_that_advanced_within_the_first_idle_sleep_is_left_to_fetch_by_itself() {
        let mut progress = quiet_for_an_hour(Driver::Agent);
        for (t, primary, replica) in [(3601, 9, 8), (3602, 9, 8), (3603, 20, 9), (3604, 20, 9)] {
            let judged = look(&mut progress, t, primary, replica, Driver::Agent);
            assert!(!judged.wake, "at {t} s it moved less than 2 s ago");
        }
        let mut busy = Progress::default();
        for t in 0..60 {
            let judged = look(&mut busy, t, 10_000, 100 * t, Driver::Agent);
            assert!(!judged.wake, "a replica catching up is never woken");
            assert_ne!(judged.motion, Motion::Stalled);
        }
    }

    #[test]
    fn a_synchronous_replica_and_one_immudb_drives_are_never_woken() {
        for driver in [Driver::Sync, Driver::Immudb] {
            let mut progress = quiet_for_an_hour(driver);
            for t in 3601..3700 {
                assert!(!look(&mut progress, t, 8, 7, driver).wake, "{driver:?}");
            }
        }
    }

    #[test]
    fn a_replica_that_lacks_transactions_and_does_not_move_is_stalled_unless_immudb_drives_it() {
        for (driver, expected) in [
            (Driver::Agent, Motion::Stalled),
            (Driver::Sync, Motion::Stalled),
            (Driver::Immudb, Motion::Current),
        ] {
            let mut progress = quiet_for_an_hour(driver);
            look(&mut progress, 3601, 8, 7, driver);
            assert_eq!(
                look(&mut progress, 3611, 8, 7, driver).motion,
                Motion::Current
            );
            assert_eq!(look(&mut progress, 3612, 8, 7, driver).motion, expected);
        }
        // Immudb's own backoff is bounded by max_lag instead.
        let mut progress = quiet_for_an_hour(Driver::Immudb);
        look(&mut progress, 3601, 8, 7, Driver::Immudb);
        assert_eq!(
            look(&mut progress, 3800, 8, 7, Driver::Immudb).motion,
            Motion::Lagging
        );
    }

    #[test]
    fn a_wake_that_does_not_move_the_replica_is_repeated_after_doubling_waits() {
        let mut progress = quiet_for_an_hour(Driver::Agent);
        let woken: Vec<u64> = (3601..4400)
            .filter(|&t| look(&mut progress, t, 8, 7, Driver::Agent).wake)
            .map(|t| t - 3601)
            .collect();
        assert_eq!(woken, [0, 10, 30, 70, 150, 310, 610]);
        // Once it advances, the next quiet period starts afresh.
        look(&mut progress, 4400, 8, 8, Driver::Agent);
        assert!(look(&mut progress, 4500, 9, 8, Driver::Agent).wake);
    }
}

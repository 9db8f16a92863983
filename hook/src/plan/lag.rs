//! Replication lag as the agent defines it. In transactions: the primary's last committed
//! transaction minus the replica's. In seconds: how long ago the primary first had a transaction
//! the replica still lacks, 0 when it lacks none; the replica holds the primary's state as it was
//! just before then, so this is the age of what it serves. The agent samples the primary's
//! transaction id at every poll and every watch tick, so "first had" is known to within one tick.
//! What the primary already had when the agent first saw it has an unknown age: until the replica
//! holds it, the replica is catching up, not lagging by some number of seconds. The tracker also
//! remembers when the replica last advanced: a replica that lacks transactions and does not move
//! is stuck, whatever its lag.

use std::collections::VecDeque;
use std::time::Duration;

/// Samples kept per database; beyond it neighbours merge, keeping the earlier time (the lag in
/// seconds can then only be overstated, never understated).
const MAX_SAMPLES: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    /// When the agent first saw the primary at `tx` (time since the agent started).
    seen_at: Duration,
    tx: u64,
}

#[derive(Clone, Debug, Default)]
pub struct LagTracker {
    samples: VecDeque<Sample>,
    /// The primary's transaction when the agent first reached it, until the replica holds it.
    backlog_at_start: Option<u64>,
    caught_up_once: bool,
    /// The replica's last transaction, and when the agent first saw it there.
    held: Option<(u64, Duration)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lag {
    pub transactions: u64,
    pub seconds: f64,
    /// The replica still lacks what the primary had when the agent started.
    pub catching_up: bool,
    /// How long the replica has lacked a transaction without advancing: the shorter of `seconds`
    /// and the time since it last advanced (0 when it lacks none).
    pub stuck_seconds: f64,
}

impl Lag {
    /// The lag in words, for the probe's body and the log.
    pub fn describe(&self) -> String {
        format!(
            "lacks {} transaction(s), the oldest committed on the primary {:.0} s ago; no progress for {:.0} s",
            self.transactions, self.seconds, self.stuck_seconds
        )
    }
}

impl LagTracker {
    /// Records the primary's last committed transaction at `now`.
    pub fn observe_primary(&mut self, now: Duration, primary_tx: u64) {
        match self.samples.back() {
            None => {
                self.backlog_at_start = Some(primary_tx);
                self.samples.push_back(Sample {
                    seen_at: now,
                    tx: primary_tx,
                });
            }
            // A primary that went backwards was replaced: what it had before says nothing now.
            Some(last) if primary_tx < last.tx => {
                self.samples.clear();
                self.samples.push_back(Sample {
                    seen_at: now,
                    tx: primary_tx,
                });
            }
            Some(last) if primary_tx > last.tx => self.samples.push_back(Sample {
                seen_at: now,
                tx: primary_tx,
            }),
            Some(_) => {}
        }
        if self.samples.len() > MAX_SAMPLES {
            self.samples = self
                .samples
                .iter()
                .collect::<Vec<_>>()
                .chunks(2)
                .map(|pair| Sample {
                    seen_at: pair[0].seen_at,
                    tx: pair[pair.len() - 1].tx,
                })
                .collect();
        }
    }

    /// The replica's lag at `now`, holding `replica_tx`; None before the primary was ever seen.
    pub fn lag(&mut self, now: Duration, replica_tx: u64) -> Option<Lag> {
        if self.held.is_none_or(|(tx, _)| tx != replica_tx) {
            self.held = Some((replica_tx, now));
        }
        let latest = self.samples.back()?.tx;
        // Transactions the replica holds need no sample any more; the latest stays.
        while self.samples.len() > 1 && self.samples[0].tx <= replica_tx {
            self.samples.pop_front();
        }
        if self.backlog_at_start.is_some_and(|tx| replica_tx >= tx) {
            self.backlog_at_start = None;
            self.caught_up_once = true;
        }
        let oldest_missing = self.samples.iter().find(|s| s.tx > replica_tx);
        let seconds = oldest_missing.map_or(0.0, |s| (now.saturating_sub(s.seen_at)).as_secs_f64());
        let transactions = latest.saturating_sub(replica_tx);
        let stuck_seconds = if transactions > 0 {
            seconds.min(self.unmoved_for(now).as_secs_f64())
        } else {
            0.0
        };
        Some(Lag {
            transactions,
            seconds,
            catching_up: self.backlog_at_start.is_some(),
            stuck_seconds,
        })
    }

    /// How long the replica has held the transaction it holds now (as far as the agent saw).
    pub fn unmoved_for(&self, now: Duration) -> Duration {
        self.held
            .map_or(Duration::ZERO, |(_, since)| now.saturating_sub(since))
    }

    /// The replica has held everything the primary had when the agent first saw it.
    pub fn caught_up_once(&self) -> bool {
        self.caught_up_once
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    #[test]
    fn a_new_replica_catches_up_before_it_counts_seconds() {
        let mut tracker = LagTracker::default();
        tracker.observe_primary(at(0), 8000);
        let lag = tracker.lag(at(0), 0).unwrap();
        assert!(lag.catching_up && lag.transactions == 8000);
        tracker.observe_primary(at(10), 8000);
        let lag = tracker.lag(at(10), 7000).unwrap();
        assert!(lag.catching_up && !tracker.caught_up_once());
        let lag = tracker.lag(at(12), 8000).unwrap();
        assert_eq!(
            (lag.transactions, lag.seconds, lag.catching_up),
            (0, 0.0, false)
        );
        assert!(tracker.caught_up_once());
    }

    #[test]
    fn seconds_count_from_the_first_sight_of_the_oldest_missing_transaction() {
        let mut tracker = LagTracker::default();
        tracker.observe_primary(at(0), 5);
        tracker.lag(at(0), 5);
        tracker.observe_primary(at(10), 6);
        tracker.observe_primary(at(20), 9);
        let lag = tracker.lag(at(25), 5).unwrap();
        assert_eq!((lag.transactions, lag.seconds), (4, 15.0));
        let lag = tracker.lag(at(30), 6).unwrap();
        assert_eq!(
            (lag.transactions, lag.seconds),
            (3, 10.0),
            "tx 7..9 appeared at 20 s"
        );
        let lag = tracker.lag(at(31), 9).unwrap();
        assert_eq!((lag.transactions, lag.seconds), (0, 0.0));
    }

    #[test]
    fn a_replica_is_stuck_for_as_long_as_it_lacks_a_transaction_and_does_not_advance() {
        let mut tracker = LagTracker::default();
        tracker.observe_primary(at(0), 5);
        tracker.lag(at(0), 5);
        // Idle for an hour: unmoved, but lacking nothing is never stuck.
        tracker.observe_primary(at(3600), 5);
        assert_eq!(tracker.lag(at(3600), 5).unwrap().stuck_seconds, 0.0);
        assert_eq!(tracker.unmoved_for(at(3600)), at(3600));
        // A write: stuck counts from when the primary had it, not from the last advance.
        tracker.observe_primary(at(3601), 6);
        let lag = tracker.lag(at(3604), 5).unwrap();
        assert_eq!((lag.seconds, lag.stuck_seconds), (3.0, 3.0));
        // Advancing while still behind restarts the count.
        tracker.observe_primary(at(3605), 9);
        tracker.lag(at(3606), 6);
        let lag = tracker.lag(at(3608), 6).unwrap();
        assert_eq!(
            (lag.transactions, lag.seconds, lag.stuck_seconds),
            (3, 3.0, 2.0)
        );
        assert!(
            lag.describe().contains("lacks 3 transaction(s)"),
            "{}",
            lag.describe()
        );
    }

    #[test]
    fn an_idle_primary_means_no_lag_whatever_the_time() {
        let mut tracker = LagTracker::default();
        tracker.observe_primary(at(0), 3);
        for t in [100, 1000, 10_000] {
            tracker.observe_primary(at(t), 3);
            assert_eq!(tracker.lag(at(t), 3).unwrap().seconds, 0.0);
        }
    }

    #[test]
    fn a_replaced_primary_starts_over_and_samples_stay_bounded() {
        let mut tracker = LagTracker::default();
        tracker.observe_primary(at(0), 100);
        tracker.lag(at(0), 100);
        tracker.observe_primary(at(5), 2);
        assert_eq!(tracker.lag(at(5), 100).unwrap().transactions, 0);
        for t in 0..5000 {
            tracker.observe_primary(at(10 + t), 1000 + t);
        }
        assert!(tracker.samples.len() <= MAX_SAMPLES);
        let lag = tracker.lag(at(5010), 100).unwrap();
        // tx 1000 was first seen at 10 s; merged with the sample before it, it counts from 5 s:
        // overstated by less than one sample's spacing, never understated.
        assert_eq!(lag.seconds, 5005.0);
    }
}

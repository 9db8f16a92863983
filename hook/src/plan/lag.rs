//! Replication lag as the agent defines it. In transactions: the primary's last committed
//! transaction minus the replica's. In seconds: how long ago the primary first had a transaction
//! the replica still lacks, 0 when it lacks none. The agent samples the primary's transaction id
//! at every poll, so "first had" is known to within one poll. What the primary already had when
//! the agent first saw it has an unknown age: until the replica holds it, the replica is
//! catching up, not lagging by some number of seconds.

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
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lag {
    pub transactions: u64,
    pub seconds: f64,
    /// The replica still lacks what the primary had when the agent started.
    pub catching_up: bool,
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
        Some(Lag {
            transactions: latest.saturating_sub(replica_tx),
            seconds: oldest_missing.map_or(0.0, |s| (now.saturating_sub(s.seen_at)).as_secs_f64()),
            catching_up: self.backlog_at_start.is_some(),
        })
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

//! How long the agent waits before its next poll. Until the local immudb first answers it polls
//! every 250 ms: a returning former primary opens its databases writable, and the first poll
//! that reaches it fences them. A poll that immudb answered with an error (a refused repair or
//! fence, a full session table) is retried after 250 ms, then twice as long each time up to
//! `pollInterval`: never a fixed fast loop against a server that answers.

use std::time::Duration;

/// The wait while the local immudb has never answered, and the first one after a refusal.
pub const FIRST_POLLS: Duration = Duration::from_millis(250);

/// How a poll ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polled {
    /// It assessed the local server.
    Assessed,
    /// The local immudb answered a call of it with an error.
    Refused,
    /// Nothing answered: the connection was refused or lost, or the call timed out (or the poll
    /// failed before it called immudb).
    Unanswered,
}

#[derive(Debug)]
pub struct Pace {
    interval: Duration,
    assessed_once: bool,
    /// Polls refused in a row.
    refused: u32,
}

impl Pace {
    pub fn new(interval: Duration) -> Pace {
        Pace {
            interval,
            assessed_once: false,
            refused: 0,
        }
    }

    /// The wait before the next poll, after one that ended as `polled`.
    pub fn after(&mut self, polled: Polled) -> Duration {
        match polled {
            Polled::Assessed => {
                self.assessed_once = true;
                self.refused = 0;
                self.interval
            }
            Polled::Refused => {
                // 2^6 x 250 ms is 16 s; past it only the cap matters.
                let doublings = self.refused.min(6);
                self.refused = self.refused.saturating_add(1);
                let wait = (FIRST_POLLS * 2u32.pow(doublings)).min(self.interval);
                tracing::debug!(
                    refused_in_a_row = self.refused,
                    wait_ms = wait.as_millis() as u64,
                    "immudb refused a call of this poll; backing off"
                );
                wait
            }
            Polled::Unanswered => {
                self.refused = 0;
                if self.assessed_once {
                    self.interval
                } else {
                    self.interval.min(FIRST_POLLS)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn refusals_back_off_doubling_up_to_the_poll_interval() {
        let mut pace = Pace::new(Duration::from_secs(5));
        let waits: Vec<Duration> = (0..8).map(|_| pace.after(Polled::Refused)).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000, 4000, 5000, 5000, 5000].map(ms)
        );
        assert_eq!(pace.after(Polled::Assessed), ms(5000));
        assert_eq!(
            pace.after(Polled::Refused),
            ms(250),
            "a success starts over"
        );
    }

    #[test]
    fn a_silent_server_is_polled_fast_until_it_first_answers() {
        let mut pace = Pace::new(Duration::from_secs(5));
        assert_eq!(pace.after(Polled::Unanswered), FIRST_POLLS);
        assert_eq!(pace.after(Polled::Unanswered), FIRST_POLLS);
        pace.after(Polled::Refused);
        pace.after(Polled::Refused);
        assert_eq!(
            pace.after(Polled::Unanswered),
            FIRST_POLLS,
            "a refusal is not an assessment"
        );
        assert_eq!(pace.after(Polled::Assessed), ms(5000));
        assert_eq!(pace.after(Polled::Unanswered), ms(5000));
    }

    #[test]
    fn no_wait_exceeds_a_short_poll_interval() {
        let mut pace = Pace::new(ms(5));
        for polled in [Polled::Refused, Polled::Unanswered, Polled::Assessed] {
            for _ in 0..10 {
                assert!(pace.after(polled) <= ms(5));
            }
        }
    }
}

//! The watch ticks between polls (every `--watch-interval`, 1 s by default): a replica's agent
//! reads what its server and the primary hold with the sessions it keeps (one DatabaseListV2
//! here, UseDatabase and CurrentState per database there), lets `plan::watch` measure the lag and
//! decide which replicators to wake, wakes them, and publishes the result at once. Everything
//! else (repairs, roles, the primary's version) waits for the next poll.

use tracing::Instrument;

use super::counters::OfDatabase;
use super::metrics::Status;
use super::poll::{Agent, Watching};
use crate::plan::health::is_replicating;
use crate::plan::watch::{self, Look};
use crate::plan::Action;
use crate::types::Credentials;

impl Agent {
    /// The next watch ticks look at `databases` when this poll reached the primary.
    pub(super) fn watch_next(
        &mut self,
        reached_primary: bool,
        who: &Credentials,
        databases: &[String],
        manage: bool,
    ) {
        self.watching = reached_primary.then(|| Watching {
            who: who.clone(),
            databases: databases.to_vec(),
            manage,
        });
    }

    /// One tick: updates `status` in place; false when there was nothing to look at or a
    /// server did not answer (the next poll reports that). It uses the sessions the poll just
    /// used, so it logs in nowhere.
    pub async fn tick(&mut self, status: &mut Status) -> bool {
        let Some(watching) = self.watching.clone() else {
            return false;
        };
        let Some(assessment) = status.assessment.as_mut() else {
            return false;
        };
        if !assessment.databases.iter().any(|d| is_replicating(d.state)) {
            return false;
        }
        let span = tracing::debug_span!("tick");
        let read = async {
            let local = self
                .on_local(|s| async move { s.observe(false).await })
                .await?;
            let primary = self
                .primary_transactions(&watching.who, &watching.databases)
                .await
                .map_err(|error| error.to_string())?;
            Ok::<_, String>((local, primary))
        };
        let (local, primary) = match read.instrument(span).await {
            Ok(read) => read,
            Err(error) => {
                // No tick opens a session: a server that failed is left to the next poll, so a
                // refused login is not retried every second (each costs immudb a bcrypt).
                tracing::debug!(%error, "watch tick: a server did not answer; watching again after the next poll");
                self.watching = None;
                return false;
            }
        };
        let look = Look {
            local: &local,
            primary: &primary,
            manage: watching.manage,
        };
        let now = self.started.elapsed();
        let wakes = watch::look(
            assessment,
            &look,
            &mut self.memory,
            now,
            &self.config.limits,
        );
        self.wake(&wakes).await;
        self.counters.logins = self.logins.count();
        status.counters = self.counters.clone();
        self.log_readiness(status);
        true
    }

    /// Wakes each replicator (`Action::WakeReplicator`), counting those immudb accepted. Logged
    /// at debug: after every quiet period each write may take one.
    pub(super) async fn wake(&mut self, wakes: &[Action]) {
        for wake in wakes {
            let database = wake.database().to_string();
            let name = database.clone();
            let woken = self
                .on_local(|s| {
                    let name = name.clone();
                    async move { s.wake_replicator(&name).await }
                })
                .await;
            match woken {
                Ok(()) => {
                    tracing::debug!(%database, "woke the replicator");
                    self.counters.wakes.increment(OfDatabase { db: database });
                }
                Err(error) => tracing::warn!(%database, %error, "could not wake the replicator"),
            }
        }
    }
}

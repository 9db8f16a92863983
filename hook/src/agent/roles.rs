//! A poll with failover on: the Lease decides the role (`failover.rs`), then the local databases
//! follow it (promoted on the primary; on any other pod, writable ones fenced and, once their
//! history is known to be a prefix of the new primary's, set to follow it), then the role's
//! usual assessment and repairs.

use std::collections::BTreeMap;
use std::time::Duration;

use super::config::other_pod_limit;
use super::counters::{OfDatabase, Switched};
use super::failover::{Ask, Takeover, Verdict};
use super::poll::{defaultdb, poll_failed, Agent};
use crate::config::spec::DatabaseReplication;
use crate::link::Link;
use crate::plan::failover::{self, History, Rejoin};
use crate::plan::health::{Assessment, Repair, State};
use crate::plan::{Action, Observed, ReplicaDesired};
use crate::types::{Credentials, Role};

impl Agent {
    pub(super) async fn poll_failover(
        &mut self,
        spec: &DatabaseReplication,
        now: Duration,
    ) -> Result<(Assessment, bool), String> {
        let names: Vec<String> = spec.databases.iter().map(|d| d.name.clone()).collect();
        let topology = self.config.topology.clone();
        let admin = self.config.admin.clone();
        let failover = self
            .failover
            .as_mut()
            .expect("a failover poll has failover");
        if let Some(why) = failover.lapsed() {
            tracing::error!(%why, "fenced: this pod stops serving writes before it reads the Lease again");
            self.fence(spec).await?;
        }
        let local = self
            .local
            .session(&admin, &defaultdb())
            .await
            .map_err(|e| poll_failed("local immudb", e))?;
        let failover = self.failover.as_mut().expect("failover");
        let ask = Ask {
            local,
            databases: &names,
            topology: &topology,
            admin: &admin,
            acks: spec.sync_acks,
        };
        let (verdict, takeover) = failover.decide(&ask).await;
        match verdict {
            Verdict::Primary => {
                let served = self.serve(spec, takeover, now).await?;
                // A planned stop, or a rollout waiting for this pod: hand the role over first.
                match self.switch_over(spec, &names).await {
                    Some(primary) => self.follow(spec, &names, Some(primary), None, now).await,
                    None => Ok(served),
                }
            }
            Verdict::Replica { primary, why } => self.follow(spec, &names, primary, why, now).await,
        }
    }

    fn record_takeover(&mut self, takeover: &Takeover) {
        let Some(previous) = &takeover.previous else {
            tracing::info!("took the free Lease: this pod is the primary");
            return;
        };
        if takeover.handed_over {
            self.counters.switchovers.increment(Switched::Received);
            tracing::info!(%previous, "switchover: {previous} handed the primary role to this pod");
            return;
        }
        self.counters.failovers += 1;
        let lost: u64 = takeover.lost.values().sum();
        for (db, count) in &takeover.lost {
            self.counters
                .lost_transactions
                .add(OfDatabase { db: db.clone() }, *count);
        }
        tracing::warn!(
            %previous,
            lost_transactions = lost,
            lost_by_database = ?takeover.lost,
            "failover: {previous} stopped renewing the Lease; this pod took it and is the primary (lost at least {lost} transactions the old primary had when last seen)"
        );
    }

    async fn serve(
        &mut self,
        spec: &DatabaseReplication,
        takeover: Option<Takeover>,
        now: Duration,
    ) -> Result<(Assessment, bool), String> {
        self.role = Role::Primary;
        if let Some(takeover) = &takeover {
            self.record_takeover(takeover);
        }
        let desired = spec.primary_desired();
        let promotions = self
            .plan_local(
                |observed| failover::promotions(&desired, observed),
                Repair::Promoted,
            )
            .await?;
        // The age of the last renew is measured again right before each step that acts as the
        // primary (its databases turn writable, the write Service routes to it, it writes, it
        // reports Ready): the process may have been stopped since the Lease was renewed, and
        // another pod may hold it now.
        self.still_serving("promotion")?;
        if !self
            .apply_all(&promotions, &spec.replication.password)
            .await
        {
            return Err(poll_failed(
                "promotion",
                "a database could not be made writable",
            ));
        }
        self.still_serving("labelling")?;
        let failover = self.failover.as_mut().expect("failover");
        failover.label(Role::Primary).await;
        let assessment = self.assess_primary(&desired, now).await?;
        self.still_serving("repair")?;
        self.repair(&assessment, &spec.replication.password).await;
        if assessment
            .databases
            .iter()
            .any(|d| d.state == State::LostOnPrimary)
        {
            let failover = self.failover.as_mut().expect("failover");
            failover.release().await;
        }
        self.still_serving("readiness")?;
        Ok((assessment, true))
    }

    /// Err when this pod's last renew of the Lease is too old for `step` to act as primary.
    fn still_serving(&self, step: &str) -> Result<(), String> {
        let failover = self.failover.as_ref().expect("failover");
        failover.serving().map_err(|why| poll_failed(step, why))
    }

    async fn follow(
        &mut self,
        spec: &DatabaseReplication,
        names: &[String],
        primary: Option<String>,
        why: Option<String>,
        now: Duration,
    ) -> Result<(Assessment, bool), String> {
        self.role = Role::Replica;
        if let Some(why) = &why {
            tracing::info!(%why, "no primary to take over from yet");
        }
        let fenced = self.fence(spec).await;
        // Read-only first, then out of the write Service: the API may be slow to answer.
        let failover = self.failover.as_mut().expect("failover");
        failover.label(Role::Replica).await;
        fenced?;
        let me = failover.config.me.clone();
        let desired = spec.replica_desired(self.config.topology.grpc_port);
        let primary = primary.filter(|p| *p != me);
        if let Some(host) = &primary {
            self.point_at(host);
        }
        let view = match &primary {
            Some(_) => self.primary_view(&spec.replication, names).await,
            None => None,
        };
        self.watch_next(view.is_some(), &spec.replication, names, true);
        if let Some(view) = &view {
            let failover = self.failover.as_mut().expect("failover");
            failover.last_seen_on_primary = view.transactions.clone();
        }
        let waiting = why.unwrap_or_else(|| "waiting to compare with the primary".into());
        let held_back = self
            .rejoin(&desired, &spec.replication, view.is_some(), &waiting)
            .await?;
        let assessment = self
            .assess_replica(&desired, view.as_ref(), true, &held_back, now)
            .await?;
        self.repair(&assessment, &spec.replication.password).await;
        Ok((assessment, view.is_some()))
    }

    /// What `plan` makes of the local immudb as it is now, each action counted as `reason`.
    pub(super) async fn plan_local(
        &mut self,
        plan: impl FnOnce(&Observed) -> Vec<Action>,
        reason: Repair,
    ) -> Result<Vec<(Action, Repair)>, String> {
        let observed = self
            .on_local(|s| async move { s.observe(false).await })
            .await?;
        Ok(plan(&observed)
            .into_iter()
            .map(|action| (action, reason))
            .collect())
    }

    /// Makes every writable database read-only (`failover::fences`): this pod does not hold the
    /// Lease, or no longer knows that it does.
    async fn fence(&mut self, spec: &DatabaseReplication) -> Result<(), String> {
        let desired = spec.replica_desired(self.config.topology.grpc_port);
        let fences = self
            .plan_local(
                |observed| failover::fences(&desired, observed),
                Repair::Fenced,
            )
            .await?;
        if !fences.is_empty() {
            tracing::warn!(
                databases = fences.len(),
                "this pod does not hold the Lease: making its writable databases read-only"
            );
        }
        if !self.apply_all(&fences, &spec.replication.password).await {
            return Err(poll_failed(
                "fence",
                "a writable database could not be made read-only",
            ));
        }
        Ok(())
    }

    /// The primary link dials `host` from now on; the old one's session is closed.
    fn point_at(&mut self, host: &str) {
        if self.primary.host != host {
            let topology = &self.config.topology;
            let limit = other_pod_limit(self.config.poll_interval);
            self.primary = Link::resolving(host, topology, &self.logins).within(limit);
        }
    }

    /// Each fenced database compared with the primary: one whose committed history is a prefix
    /// of the primary's follows it now; the others are held back (diverged, or fenced while no
    /// primary answers).
    async fn rejoin(
        &mut self,
        desired: &ReplicaDesired,
        replication: &Credentials,
        primary_answers: bool,
        waiting: &str,
    ) -> Result<BTreeMap<String, (State, String)>, String> {
        let observed = self
            .on_local(|s| async move { s.observe(false).await })
            .await?;
        let mut held = BTreeMap::new();
        for wanted in &desired.databases {
            let name = wanted.name.as_str();
            if !observed.database(name).is_some_and(failover::is_fenced) {
                continue;
            }
            if !primary_answers {
                held.insert(name.to_string(), (State::Fenced, waiting.to_string()));
                continue;
            }
            let history = match self.history(name, replication).await {
                Ok(history) => history,
                Err(error) => {
                    let why = format!("cannot compare with the primary: {error}");
                    held.insert(name.to_string(), (State::Fenced, why));
                    continue;
                }
            };
            match failover::rejoin(&history) {
                Rejoin::Follow => {
                    tracing::info!(
                        database = name,
                        "its history is a prefix of the primary's: following it"
                    );
                    let follow = [(failover::follow(desired, name), Repair::Rejoined)];
                    self.apply_all(&follow, &replication.password).await;
                }
                Rejoin::Diverged(detail) => {
                    tracing::error!(database = name, %detail, "diverged from the primary: kept read-only, never overwritten");
                    held.insert(name.to_string(), (State::Diverged, detail));
                }
            }
        }
        Ok(held)
    }

    /// `database` here against the primary: committed position and Alh here, the primary's
    /// committed position and its Alh at ours.
    async fn history(
        &mut self,
        database: &str,
        replication: &Credentials,
    ) -> Result<History, String> {
        let (position, alh) = self
            .on_local(|local| async move {
                local.use_database(database).await?;
                local.position().await
            })
            .await?;
        let name = [database.to_string()];
        let theirs = self
            .primary
            .call(replication, &name, |primary| async move {
                primary.use_database(database).await?;
                let (theirs, _) = primary.position().await?;
                let at_ours = if position.committed > 0 && position.committed <= theirs.committed {
                    Some(primary.tx_header(position.committed).await?.alh())
                } else {
                    None
                };
                Ok((theirs, at_ours))
            })
            .await;
        let (theirs, at_ours) = theirs.map_err(|e| poll_failed("the primary", e))?;
        Ok(History {
            local: (position.committed, alh),
            primary_committed: theirs.committed,
            primary_alh_at_local: at_ours,
        })
    }
}

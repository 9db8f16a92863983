//! What a poll observes and how it repairs: the local server's and the primary's state, the
//! replicas' holdings before a create, the assessment (pure, `plan::health`), and the repairs
//! applied on the local server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::counters::Repaired;
use super::poll::{poll_failed, Agent};
use crate::client::{Client, RpcError};
use crate::config::Topology;
use crate::holdings::held_by_replicas;
use crate::locate;
use crate::plan::health::{self, Assessment, PrimaryView, Repair, ReplicaView, State};
use crate::plan::{Action, PrimaryDesired, ReplicaDesired};
use crate::scrape;
use crate::types::{Credentials, Secret};

/// How long an answer of the replicas about what they hold is reused: asking costs each of them
/// a login, and a lost database stays lost until an operator acts.
const HOLDINGS_FOR: Duration = Duration::from_secs(60);

/// Each of `databases`' last committed transaction on `session`'s server, absent when it lacks
/// one. UseDatabase and CurrentState per database: what the replication user is known to be
/// allowed.
async fn transactions_on(
    session: &Client,
    databases: &[String],
) -> Result<BTreeMap<String, u64>, RpcError> {
    let mut transactions = BTreeMap::new();
    for database in databases {
        match session.use_database(database).await {
            Ok(()) => {}
            Err(e) if e.code == tonic::Code::NotFound => continue,
            Err(e) => return Err(e),
        }
        transactions.insert(database.clone(), session.current_state().await?.tx_id);
    }
    Ok(transactions)
}

impl Agent {
    /// The local `immudb_replication_replicators` gauges.
    async fn replicator_gauges(&self) -> Result<BTreeMap<String, u64>, String> {
        let metrics = SocketAddr::new(self.config.local_address, self.config.topology.metrics_port);
        let url = format!("http://{metrics}/metrics");
        scrape::scrape_gauge(&self.http, &url, scrape::REPLICATORS)
            .await
            .map_err(|e| poll_failed("local metrics", e))
    }

    /// The primary's version and each database's last committed transaction, over one session
    /// of the replication user; None when the primary does not answer.
    pub(super) async fn primary_view(
        &mut self,
        who: &Credentials,
        databases: &[String],
    ) -> Option<PrimaryView> {
        let view = self
            .primary
            .call(who, databases, |session| async move {
                let version = session.server_version().await?;
                let transactions = transactions_on(&session, databases).await?;
                Ok(PrimaryView {
                    version,
                    transactions,
                })
            })
            .await;
        match view {
            Ok(view) => Some(view),
            Err(error) => {
                tracing::info!(primary = %self.primary.host, %error, "the primary did not answer");
                None
            }
        }
    }

    /// Each database's last committed transaction on the primary (absent when the primary lacks
    /// it), over the kept session of `who`.
    pub(super) async fn primary_transactions(
        &mut self,
        who: &Credentials,
        databases: &[String],
    ) -> Result<BTreeMap<String, u64>, RpcError> {
        self.primary
            .call(who, databases, |session| async move {
                transactions_on(&session, databases).await
            })
            .await
    }

    pub(super) async fn assess_replica(
        &mut self,
        desired: &ReplicaDesired,
        primary: Option<&PrimaryView>,
        manage: bool,
        held_back: &BTreeMap<String, (State, String)>,
        now: Duration,
    ) -> Result<Assessment, String> {
        let observed = self
            .on_local(|s| async move { s.observe(false).await })
            .await?;
        let version = self
            .on_local(|s| async move { s.server_version().await })
            .await?;
        let replicators = self.replicator_gauges().await?;
        let view = ReplicaView {
            manage,
            observed: &observed,
            replicators: &replicators,
            local_version: &version,
            primary,
            held_back,
        };
        Ok(health::assess_replica(
            desired,
            &view,
            &mut self.memory,
            now,
            &self.config.limits,
        ))
    }

    /// The pods a primary asks what they hold before it creates a database: the declared
    /// replicas, and with failover every other pod the replica StatefulSet has (a pod added by
    /// `kubectl scale`, or the former primary, may hold the history).
    async fn others(&self) -> Topology {
        let declared = &self.config.topology;
        let Some(failover) = &self.failover else {
            return declared.clone();
        };
        match failover.others(declared).await {
            Ok(others) => others,
            Err(error) => {
                tracing::warn!(%error, "cannot count the release's pods; asking the declared ones");
                locate::with_primary(declared, &failover.config.me)
            }
        }
    }

    pub(super) async fn assess_primary(
        &mut self,
        desired: &PrimaryDesired,
        now: Duration,
    ) -> Result<Assessment, String> {
        let observed = self
            .on_local(|s| async move { s.observe(true).await })
            .await?;
        let creates = crate::plan::creates_databases(desired, &observed);
        let held = match &self.holdings {
            _ if creates.is_empty() => BTreeMap::new(),
            Some((asked, held)) if asked.elapsed() < HOLDINGS_FOR => held.clone(),
            _ => {
                let others = self.others().await;
                let held =
                    held_by_replicas(&others, &self.config.admin, &creates, &self.logins).await;
                self.holdings = Some((Instant::now(), held.clone()));
                held
            }
        };
        Ok(health::assess_primary(
            desired,
            &observed,
            &held,
            &mut self.memory,
            now,
            &self.config.limits,
        ))
    }

    /// Applies the assessment's repairs on the local server, counting those that took, then
    /// wakes the replicators it names. `password` is the replication user's, for a CreateUser
    /// repair.
    pub(super) async fn repair(&mut self, assessment: &Assessment, password: &Secret) {
        self.apply_all(&assessment.repairs, password).await;
        self.wake(&assessment.wakes).await;
    }

    /// Applies each action on the local server, counting those that took; true when all did.
    pub(super) async fn apply_all(
        &mut self,
        actions: &[(Action, Repair)],
        password: &Secret,
    ) -> bool {
        let mut all = true;
        for (action, reason) in actions {
            let database = action.database().to_string();
            tracing::info!(%database, reason = reason.name(), ?action, "repairing");
            let applied = self
                .on_local(|s| async move { s.apply(action, password).await })
                .await;
            match applied {
                Ok(()) => {
                    if *reason == Repair::Settings {
                        self.memory.update_applied(action);
                    }
                    self.counters.repairs.increment(Repaired {
                        db: database,
                        reason: *reason,
                    })
                }
                // Another writer (the Job) may have done it first; the next poll observes again.
                Err(error) => {
                    all = false;
                    tracing::warn!(%database, %error, "repair failed");
                }
            }
        }
        all
    }
}

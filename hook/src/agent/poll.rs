//! One poll: observe, assess (pure, `plan::health`), repair, report. With failover the role
//! comes from the Lease first (`roles.rs`); what a poll observes and how it repairs is
//! `assess.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::config::{other_pod_limit, AgentConfig, AgentRole};
use super::counters::Counters;
use super::failover::Failover;
use super::metrics::Status;
use super::stopping::{Handover, Stop};
use crate::client::{Client, RpcError};
use crate::config::Desired;
use crate::link::{Dial, Link};
use crate::plan::health::{Assessment, Memory};
use crate::plan::{DesiredDatabase, PrimaryDesired, ReplicaDesired, ReplicaOptions};
use crate::session::Logins;
use crate::types::{Credentials, Role};

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Replicas' holdings as last asked, and when.
type Holdings = (Instant, BTreeMap<String, (String, u64)>);

pub struct Agent {
    pub config: AgentConfig,
    pub(super) started: Instant,
    pub(super) local: Link,
    /// The primary, for a replica's agent.
    pub(super) primary: Link,
    /// Every login the agent makes, whichever server.
    pub(super) logins: Logins,
    /// Whether the local immudb answered a call of this poll (a refusal is an answer).
    local_answered: bool,
    pub(super) http: reqwest::Client,
    pub(super) memory: Memory,
    pub(super) counters: Counters,
    /// The last spec that validated: a broken edit keeps the agent on the previous one.
    desired: Option<Desired>,
    /// The primary's agent: what replicas held when a create was last planned.
    pub(super) holdings: Option<Holdings>,
    /// Why the pod was last not Ready, logged again only when it changes.
    last_reasons: Vec<String>,
    /// Databases whose accepted settings immudb does not report back, logged once.
    last_unconfirmed: Vec<String>,
    /// Set with failover: the Lease decides the role.
    pub(super) failover: Option<Failover>,
    /// The role this poll acts in: fixed without failover, the Lease's with it.
    pub(super) role: Role,
    /// What the watch ticks look at until the next poll: set by a replica's poll that reached
    /// a primary.
    pub(super) watching: Option<Watching>,
    /// The pod's stop, once the preStop hook asked (`stop`).
    pub(super) stop: Stop,
    /// The hand-over's state across polls (`switchover`).
    pub(super) handover: Handover,
    /// The status the HTTP port shows: set after each poll and tick, and during a hand-over.
    pub(super) shown: Arc<Mutex<Status>>,
}

/// A replica's databases and how the agent reaches the primary, for the watch ticks.
#[derive(Clone)]
pub(super) struct Watching {
    /// Who the primary's session belongs to (the replication user; admin in systemdb mode).
    pub who: Credentials,
    pub databases: Vec<String>,
    /// Whether the agent may change the databases (not in systemdb mode).
    pub manage: bool,
}

/// The database the admin's sessions open on.
pub(super) fn defaultdb() -> [String; 1] {
    ["defaultdb".to_string()]
}

pub(super) fn poll_failed(step: &str, error: impl std::fmt::Display) -> String {
    format!("{step}: {error}")
}

impl Agent {
    pub fn new(config: AgentConfig) -> Agent {
        let topology = &config.topology;
        let logins = Logins::default();
        let local = Link::new(
            &topology.primary,
            Dial::Fixed(config.local_address),
            topology,
            &logins,
        );
        let primary = Link::resolving(&topology.primary, topology, &logins)
            .within(other_pod_limit(config.poll_interval));
        // The local metrics port is plaintext on replicas, the only agents that read it.
        let http = crate::tls::http_client_builder(None, SCRAPE_TIMEOUT)
            .build()
            .expect("a plain HTTP client builds");
        let role = match config.role {
            AgentRole::Primary => Role::Primary,
            AgentRole::Replica => Role::Replica,
        };
        let started = Instant::now();
        let failover = config
            .failover
            .clone()
            .map(|f| Failover::new(f, &logins, started));
        Agent {
            config,
            started,
            local,
            primary,
            logins,
            local_answered: false,
            http,
            memory: Memory::default(),
            counters: Counters::default(),
            desired: None,
            holdings: None,
            last_reasons: Vec::new(),
            last_unconfirmed: Vec::new(),
            failover,
            role,
            watching: None,
            stop: Stop::default(),
            handover: Handover::default(),
            shown: Arc::new(Mutex::new(Status::default())),
        }
    }

    /// Re-reads the spec; on an error the previous one stays in force. The counters learn its
    /// databases, so each has its series before its first event.
    fn refresh_desired(&mut self) -> Result<Desired, String> {
        let desired = match self.config.desired() {
            Ok(desired) => {
                self.desired = Some(desired.clone());
                desired
            }
            Err(error) => {
                tracing::error!(%error, "the spec file is invalid; keeping the previous one");
                self.desired.clone().ok_or_else(|| error.to_string())?
            }
        };
        self.counters.databases = match &desired {
            Desired::Database(spec) => spec.databases.iter().map(|d| d.name.clone()).collect(),
            Desired::Systemdb { .. } => defaultdb().to_vec(),
        };
        Ok(desired)
    }

    pub async fn poll(&mut self) -> Status {
        let started = Instant::now();
        self.counters.polls += 1;
        self.local_answered = false;
        let role = self.config.role;
        let span = tracing::info_span!("poll", ?role);
        self.watching = None;
        let outcome = self.poll_role().instrument(span).await;
        let serving_until = match (&self.failover, self.role) {
            (Some(failover), Role::Primary) => failover.serving_until(),
            _ => None,
        };
        let mut status = Status {
            last_poll_seconds: started.elapsed().as_secs_f64(),
            role: Some(self.role),
            serving_until,
            ..Default::default()
        };
        match outcome {
            Ok((assessment, primary_reachable)) => {
                status.primary_reachable = primary_reachable;
                status.assessment = Some(assessment);
            }
            Err(error) => {
                self.counters.poll_errors += 1;
                tracing::warn!(%error, "poll failed");
                status.error = Some(error);
            }
        }
        self.settle_stop(&mut status);
        self.log_readiness(&status);
        self.log_unconfirmed_settings(&status);
        self.counters.logins = self.logins.count();
        status.counters = self.counters.clone();
        status
    }

    /// Logs why the pod is not Ready, once per change (a poll or a watch tick).
    pub(super) fn log_readiness(&mut self, status: &Status) {
        let reasons = if status.ready() {
            Vec::new()
        } else {
            status.not_ready_reasons()
        };
        if reasons != self.last_reasons {
            if reasons.is_empty() {
                tracing::info!("ready");
            } else {
                tracing::info!(?reasons, "not ready");
            }
            self.last_reasons = reasons;
        }
    }

    /// Whether the local immudb answered a call of the last poll, if only with a refusal.
    pub fn local_answered(&self) -> bool {
        self.local_answered
    }

    /// A settings update immudb accepted but does not report back is worth one warning, not one
    /// per poll.
    fn log_unconfirmed_settings(&mut self, status: &Status) {
        let Some(assessment) = &status.assessment else {
            return;
        };
        let unconfirmed: Vec<&_> = assessment
            .databases
            .iter()
            .filter(|d| d.settings_unconfirmed)
            .collect();
        let names: Vec<String> = unconfirmed.iter().map(|d| d.name.clone()).collect();
        if names == self.last_unconfirmed {
            return;
        }
        for database in unconfirmed
            .iter()
            .filter(|d| !self.last_unconfirmed.contains(&d.name))
        {
            let detail = database.detail.as_deref().unwrap_or_default();
            tracing::warn!(database = %database.name, "{detail}");
        }
        self.last_unconfirmed = names;
    }

    async fn poll_role(&mut self) -> Result<(Assessment, bool), String> {
        let now = self.started.elapsed();
        let spec = match self.refresh_desired()? {
            Desired::Database(spec) => spec,
            Desired::Systemdb {
                primary_host_for_replicas,
            } => return self.poll_systemdb(primary_host_for_replicas, now).await,
        };
        if self.failover.is_some() {
            return self.poll_failover(&spec, now).await;
        }
        let (assessment, primary_reachable) = match self.config.role {
            AgentRole::Replica => {
                let names: Vec<String> = spec.databases.iter().map(|d| d.name.clone()).collect();
                let primary = self.primary_view(&spec.replication, &names).await;
                self.watch_next(primary.is_some(), &spec.replication, &names, true);
                let desired = spec.replica_desired(self.config.topology.grpc_port);
                let assessment = self
                    .assess_replica(&desired, primary.as_ref(), true, &BTreeMap::new(), now)
                    .await?;
                (assessment, primary.is_some())
            }
            AgentRole::Primary => {
                let assessment = self.assess_primary(&spec.primary_desired(), now).await?;
                (assessment, true)
            }
        };
        self.repair(&assessment, &spec.replication.password).await;
        Ok((assessment, primary_reachable))
    }

    /// systemdb mode: immudb replicates defaultdb itself (IMMUDB_REPLICATION_* env, as the admin
    /// user); the agent only observes it and decides readiness.
    async fn poll_systemdb(
        &mut self,
        primary_host: String,
        now: Duration,
    ) -> Result<(Assessment, bool), String> {
        let admin = self.config.admin.clone();
        let defaultdb = vec![DesiredDatabase::named("defaultdb")];
        match self.config.role {
            AgentRole::Primary => {
                let desired = PrimaryDesired {
                    databases: Vec::new(),
                    sync_acks: None,
                    replication_user: admin.user,
                };
                Ok((self.assess_primary(&desired, now).await?, true))
            }
            AgentRole::Replica => {
                let names = ["defaultdb".to_string()];
                let primary = self.primary_view(&admin, &names).await;
                self.watch_next(primary.is_some(), &admin, &names, false);
                let desired = ReplicaDesired {
                    databases: defaultdb,
                    primary_host,
                    primary_port: u32::from(self.config.topology.grpc_port),
                    replication_user: admin.user,
                    replication_password: admin.password,
                    options: ReplicaOptions::default(),
                };
                let assessment = self
                    .assess_replica(&desired, primary.as_ref(), false, &BTreeMap::new(), now)
                    .await?;
                Ok((assessment, primary.is_some()))
            }
        }
    }

    /// Runs `call` on the local session (see `Link::call`), noting whether immudb answered.
    pub(super) async fn on_local<T, F, Fut>(&mut self, call: F) -> Result<T, String>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, RpcError>>,
    {
        let result = self
            .local
            .call(&self.config.admin, &defaultdb(), call)
            .await;
        self.local_answered |= result.as_ref().map_or_else(|e| !e.unanswered(), |_| true);
        result.map_err(|e| poll_failed("local immudb", e))
    }
}

//! The hand-over of the primary role before a planned stop (`plan::switchover` decides when and
//! to whom). The primary's agent, while immudb still serves:
//!
//! 1. renews the Lease (a whole lease duration before anyone may call it expired) and reports
//!    not Ready;
//! 2. fences its databases: read-only, synchronous replication kept, so nothing it did not get
//!    acknowledged commits (`plan::failover::fences`);
//! 3. copies to the chosen replica what it lacks of each database's committed history: exportTx
//!    here, replicateTx there (`transfer`), chain-checked. A synchronous replica cannot fetch from
//!    a fenced primary (immudb keeps no replica states on a replica database), its replicator
//!    sleeps after failed fetches, and one on another immudb version never replicates from this
//!    one; a copy works in every case. A synchronous replica only precommits what it is sent,
//!    and its promotion commits it;
//! 4. moves the Lease to it: an update on the version it wrote, so nobody changed it meanwhile;
//! 5. asks the new holder's agent to poll now (it still decides from the Lease itself, promotes
//!    its databases and labels its pod) and waits until it serves writes;
//! 6. wakes the other replicas' replicators, which slept while the primary was fenced, and
//!    labels its own pod replica.
//!
//! All within `--switchover-timeout`; past it, or on any failure, it takes the Lease back if it
//! moved (the same optimistic update: a conflict means the new holder renewed it, so it did
//! take over), makes its databases writable again, and keeps the Lease through its restart as
//! without a hand-over. Each hand-over is counted in `immudb_agent_switchovers_total{outcome}`,
//! never as a failover.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use immudb_txlog::Chain;
use tokio::time::Instant;

use super::counters::Switched;
use super::failover::ROLE_LABEL;
use super::poll::{defaultdb, Agent};
use super::position::position_of;
use super::survey::Survey;
use crate::config::spec::DatabaseReplication;
use crate::kube::KubeError;
use crate::plan::cutoff::pod_of;
use crate::plan::failover::{self, Position};
use crate::plan::health::Repair;
use crate::plan::switchover::{self, Member, When};
use crate::report::Failure;
use crate::session::{Bound, Session};
use crate::transfer::{self, Depth};
use crate::types::Role;

/// exportTx calls read ahead while copying.
const READ_AHEAD: usize = 16;
/// How often the hand-over looks whether the new primary serves writes.
const LOOK_EVERY: Duration = Duration::from_millis(20);
/// How long the new primary's agent may take to answer `/poll` or `/readyz`.
const UNTIL_SERVING_CALL: Duration = Duration::from_secs(1);

/// After a hand-over that a rollout asked for (not a stop) failed, none again for this long:
/// each attempt fences the primary for a moment.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why a hand-over stopped short, and whether the Lease had moved by then.
struct Abandoned {
    why: String,
    lease_moved: bool,
}

fn abandoned(why: impl Into<String>) -> Abandoned {
    Abandoned {
        why: why.into(),
        lease_moved: false,
    }
}

impl Agent {
    /// After a poll that served as primary (failover on): hands the role over when
    /// `plan::switchover` says so, and returns the new primary's address when it did.
    pub(super) async fn switch_over(
        &mut self,
        spec: &DatabaseReplication,
        names: &[String],
    ) -> Option<String> {
        let stopping = self.stop.pending();
        let paused = self
            .handover
            .not_before
            .is_some_and(|at| Instant::now() < at);
        if !stopping && paused {
            return None;
        }
        let rollouts = self.rollouts().await;
        if !stopping && !rollouts.any() {
            return None;
        }
        let survey = match self.survey(stopping, &rollouts).await {
            Ok(survey) => survey,
            Err(error) => {
                tracing::warn!(%error, "cannot look at the release's pods; keeping the role for now");
                return self.wait_or_keep(stopping, &error);
            }
        };
        let wait = self.failover.as_ref().map(|f| f.config.rollout_wait)?;
        let why = match switchover::when(&survey.me, &survey.members, self.stop.waited(), wait) {
            When::Stay => return None,
            When::Wait(pending) => {
                if self.handover.waiting_for.as_deref() != Some(pending.as_str()) {
                    tracing::info!(%pending, "the pod is stopping; waiting for the rollout to reach every other pod before handing over");
                    self.handover.waiting_for = Some(pending);
                }
                return None;
            }
            When::Now(why) => why,
        };
        let started = Instant::now();
        let handed = self.hand_over(spec, names, survey, &why).await;
        self.handover.peers.close().await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match handed {
            Ok(target) => {
                tracing::info!(%target, %why, elapsed_ms, "switchover: handed the primary role over; it serves writes");
                self.counters.switchovers.increment(Switched::HandedOver);
                if stopping {
                    self.stop.reason =
                        Some(format!("stopping: handed the primary role to {target}"));
                    self.show_outcome();
                    self.stop
                        .answer(&format!("handed the primary role to {target}"));
                }
                Some(target)
            }
            Err(abandoned) => {
                let kept = self.keep_role(spec, abandoned).await;
                self.show_outcome();
                if stopping {
                    self.stop.answer(&kept);
                } else {
                    self.handover.not_before = Some(Instant::now() + RETRY_AFTER);
                }
                None
            }
        }
    }

    /// A survey failed: a stopping primary keeps waiting until its bound, then keeps its role.
    fn wait_or_keep(&mut self, stopping: bool, error: &str) -> Option<String> {
        let wait = self.failover.as_ref().map(|f| f.config.rollout_wait)?;
        if stopping && self.stop.waited() >= wait {
            tracing::error!(%error, "switchover: not handed over; this pod keeps the Lease through its restart");
            self.counters.switchovers.increment(Switched::KeptRole);
            self.show_outcome();
            self.stop.answer(&format!("kept the primary role: {error}"));
        }
        None
    }

    /// The hand-over itself, within `--switchover-timeout`; Ok with the new primary.
    async fn hand_over(
        &mut self,
        spec: &DatabaseReplication,
        names: &[String],
        mut survey: Survey,
        why: &str,
    ) -> Result<String, Abandoned> {
        let timeout = self
            .failover
            .as_ref()
            .map(|f| f.config.switchover_timeout)
            .unwrap_or_default();
        let deadline = Instant::now() + timeout;
        self.positions(&mut survey.members, names).await;
        let target = switchover::target(&survey.me, &survey.members)
            .map_err(abandoned)?
            .clone();
        tracing::info!(target = %target.host, %why, "switchover: handing the primary role over");
        tokio::time::timeout_at(deadline, self.fence_and_copy(spec, names, &target))
            .await
            .map_err(|_| abandoned(format!("fencing and copying took over {timeout:?}")))??;
        let failover = self.failover.as_mut().expect("a hand-over has failover");
        failover
            .hand_to(&target.host)
            .await
            .map_err(|e| abandoned(format!("moving the Lease: {e}")))?;
        tracing::info!(target = %target.host, "switchover: moved the Lease");
        let address = survey.addresses.get(&target.host).copied();
        tokio::time::timeout_at(deadline, self.until_serving(&target.host, names, address))
            .await
            .map_err(|_| Abandoned {
                why: format!("{} did not serve writes within {timeout:?}", target.host),
                lease_moved: true,
            })?;
        self.wake_the_others(&survey.members, &target.host, names)
            .await;
        let failover = self.failover.as_mut().expect("a hand-over has failover");
        failover.label(Role::Replica).await;
        self.role = Role::Replica;
        Ok(target.host)
    }

    /// Steps 1 to 3: renew, report not Ready, fence, copy what the target lacks.
    async fn fence_and_copy(
        &mut self,
        spec: &DatabaseReplication,
        names: &[String],
        target: &Member,
    ) -> Result<(), Abandoned> {
        let failover = self.failover.as_mut().expect("a hand-over has failover");
        failover
            .renew_now()
            .await
            .map_err(|e| abandoned(format!("renewing the Lease first: {e}")))?;
        self.show_stopping(format!("handing the primary role over to {}", target.host));
        let desired = spec.replica_desired(self.config.topology.grpc_port);
        let fences = self
            .plan_local(|o| failover::fences(&desired, o), Repair::Fenced)
            .await
            .map_err(abandoned)?;
        if !self.apply_all(&fences, &spec.replication.password).await {
            return Err(abandoned("a database could not be made read-only"));
        }
        let mine = self
            .on_local(|s| async move { position_of(&s, names).await })
            .await
            .map_err(abandoned)?;
        let committed: BTreeMap<String, u64> = mine
            .transactions
            .iter()
            .map(|(db, t)| (db.clone(), t.committed))
            .collect();
        let depth = Depth {
            read_ahead: READ_AHEAD,
            replicate: spec.options.replication_commit_concurrency.max(1) as usize,
        };
        let theirs = self.position_on(&target.host, names).await?;
        for (database, (first, last)) in switchover::lacking(&committed, &theirs) {
            tracing::info!(target = %target.host, %database, first, last, "switchover: copying what the new primary lacks");
            self.copy_to(&target.host, &database, last, depth).await?;
        }
        let theirs = self.position_on(&target.host, names).await?;
        match switchover::lacking(&committed, &theirs).into_iter().next() {
            None => Ok(()),
            Some((database, (first, _))) => Err(abandoned(format!(
                "{} still lacks transaction {first} of {database} after the copy",
                target.host
            ))),
        }
    }

    /// What `host` holds of `names`, over the admin's session kept for the hand-over.
    async fn position_on(&mut self, host: &str, names: &[String]) -> Result<Position, Abandoned> {
        let admin = self.config.admin.clone();
        let topology = self.config.topology.clone();
        let link = self.handover.peers.link(host, &topology, &self.logins);
        link.call(&admin, &defaultdb(), |session| async move {
            position_of(&session, names).await
        })
        .await
        .map_err(|e| abandoned(format!("{host}: {e}")))
    }

    /// Copies `database` up to transaction `last` from this pod's immudb into `host`'s, with
    /// sessions of their own (closed after). The target's replicator may be replicating too: on
    /// a refused call the copy starts again from what the target holds then.
    async fn copy_to(
        &mut self,
        host: &str,
        database: &str,
        last: u64,
        depth: Depth,
    ) -> Result<(), Abandoned> {
        let failed = |e: String| abandoned(format!("copying {database} to {host}: {e}"));
        let admin = self.config.admin.clone();
        let bound = Bound::EachCall(Duration::from_secs(2));
        let local = self
            .local
            .connect()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let topology = self.config.topology.clone();
        let remote = self
            .handover
            .peers
            .link(host, &topology, &self.logins)
            .connect()
            .await
            .map_err(|e| failed(e.to_string()))?;
        // Each logs in at its first call, counted with the agent's other logins.
        let on = [database.to_string()];
        let reader = Session::new(&local, &admin, &on, bound).counting(&self.logins);
        let writer = Session::new(&remote, &admin, &on, bound).counting(&self.logins);
        let (reader, writer) = (Arc::new(reader), Arc::new(writer));
        let copied = async {
            loop {
                let held = writer
                    .call("CurrentState", |c| async move {
                        c.precommitted_state().await
                    })
                    .await
                    .map_err(|(_, e)| e)?;
                if held.tx_id >= last {
                    return Ok(());
                }
                let from = Chain::after(held.tx_id, held.alh);
                match transfer::copy(&reader, &writer, from, last, depth, "this primary").await {
                    Ok(_) => {}
                    Err((Failure::Integrity, reason)) => return Err(reason),
                    Err((_, reason)) => {
                        tracing::info!(%database, %reason, "switchover: a copy call was refused; copying again from what the new primary holds");
                        tokio::time::sleep(LOOK_EVERY).await;
                    }
                }
            }
        }
        .await;
        reader.close().await;
        writer.close().await;
        copied.map_err(failed)
    }

    /// Asks the new holder's agent to poll now, then waits until its databases are writable,
    /// its pod is labelled primary and its agent calls it Ready: the write Service routes to it.
    async fn until_serving(&mut self, host: &str, names: &[String], address: Option<IpAddr>) {
        let port = self.config.listen.port();
        let http = self.http.clone();
        let url =
            |path: &str| address.map(|ip| format!("http://{}{path}", SocketAddr::new(ip, port)));
        if let Some(url) = url("/poll") {
            if let Err(error) = http.get(&url).timeout(UNTIL_SERVING_CALL).send().await {
                tracing::info!(%error, "could not ask the new primary's agent to poll now; it polls on its own");
            }
        }
        // Its pod's name, to see its label: only in the StatefulSet form (a listed replica is
        // an address, whose pod the agent does not know).
        let pod = pod_of(host)
            .filter(|_| self.config.topology.replica_pods.is_some())
            .map(str::to_string);
        loop {
            if self
                .serves_writes(host, pod.as_deref(), names, url("/readyz"), &http)
                .await
            {
                return;
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    /// Every database writable on `host`, its pod (when known) labelled primary, its agent
    /// calling it Ready.
    async fn serves_writes(
        &mut self,
        host: &str,
        pod: Option<&str>,
        names: &[String],
        readyz: Option<String>,
        http: &reqwest::Client,
    ) -> bool {
        let admin = self.config.admin.clone();
        let topology = self.config.topology.clone();
        let link = self.handover.peers.link(host, &topology, &self.logins);
        let listed = link
            .call(&admin, &defaultdb(), |session| async move {
                session.list_databases().await
            })
            .await;
        let writable = listed.is_ok_and(|listed| {
            names.iter().all(|name| {
                listed
                    .iter()
                    .any(|d| d.name == *name && d.loaded && !d.replication.replica)
            })
        });
        // Each look stops at the first that fails: it runs every 20 ms until the target serves.
        if !writable {
            return false;
        }
        let Some(failover) = &self.failover else {
            return false;
        };
        let labelled = match pod {
            Some(pod) => matches!(
                failover.kube().pod(pod).await,
                Ok(Some(view)) if view.labels.get(ROLE_LABEL).map(String::as_str) == Some("primary")
            ),
            None => true,
        };
        if !labelled {
            return false;
        }
        match readyz {
            Some(url) => {
                let answer = http.get(&url).timeout(UNTIL_SERVING_CALL).send().await;
                matches!(answer, Ok(r) if r.status().is_success())
            }
            None => false,
        }
    }

    /// The other replicas' replicators slept while the primary was fenced: they fetch again at
    /// once (an UpdateDatabaseV2 with empty replication settings restarts one). Best effort.
    async fn wake_the_others(&mut self, members: &[Member], target: &str, names: &[String]) {
        let admin = self.config.admin.clone();
        let topology = self.config.topology.clone();
        for member in members
            .iter()
            .filter(|m| m.host != target && m.version.is_some())
        {
            let link = self
                .handover
                .peers
                .link(&member.host, &topology, &self.logins);
            for database in names {
                let woken = link
                    .call(&admin, &defaultdb(), |session| async move {
                        session.wake_replicator(database).await
                    })
                    .await;
                if let Err(error) = woken {
                    tracing::info!(peer = %member.host, %database, %error, "could not wake the replicator");
                }
            }
        }
    }

    /// The fallback: the Lease back if it moved, the databases writable again; this pod keeps
    /// the role through its restart. Returns the hook's answer.
    async fn keep_role(&mut self, spec: &DatabaseReplication, abandoned: Abandoned) -> String {
        let why = abandoned.why;
        if abandoned.lease_moved {
            let failover = self.failover.as_mut().expect("a hand-over has failover");
            match failover.take_back().await {
                Ok(()) => tracing::warn!("switchover: took the Lease back"),
                Err(KubeError::Conflict(_)) => {
                    tracing::warn!(%why, "switchover: the new primary renewed the Lease after the bound; it is the primary");
                    self.counters.switchovers.increment(Switched::HandedOver);
                    self.role = Role::Replica;
                    self.stop.reason = Some("stopping: handed the primary role over late".into());
                    return format!("handed the primary role over late: {why}");
                }
                Err(error) => {
                    tracing::error!(%error, "switchover: could not take the Lease back; the other pods elect a primary when it expires");
                }
            }
        }
        self.counters.switchovers.increment(Switched::KeptRole);
        tracing::error!(%why, "switchover: not handed over; this pod keeps the Lease through its restart, as without a hand-over");
        self.unfence(spec).await;
        self.stop.reason = None;
        format!("kept the primary role: {why}")
    }

    /// Makes the fenced databases writable again, as the primary's poll would.
    async fn unfence(&mut self, spec: &DatabaseReplication) {
        let desired = spec.primary_desired();
        let promotions = match self
            .plan_local(|o| failover::promotions(&desired, o), Repair::Promoted)
            .await
        {
            Ok(promotions) => promotions,
            Err(error) => {
                tracing::warn!(%error, "cannot read the databases back; the next poll makes them writable");
                return;
            }
        };
        self.apply_all(&promotions, &spec.replication.password)
            .await;
    }
}

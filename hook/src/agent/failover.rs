//! Failover in the agent: each poll it reads the release's Lease and decides (`plan::failover`)
//! whether this pod is the primary (it holds the Lease and renewed it in time) or a replica of
//! the holder; when nobody holds it, it compares every pod's transactions and the most advanced
//! takes it with an optimistic update (a conflict means another pod won), after cutting the old
//! primary off (`election`, `cutoff`). It labels its own pod with its role, which the write and read
//! Services select.
//!
//! Every step that acts on the Lease measures the time since the last renew right before it acts:
//! the process may have been stopped for a while (SIGSTOP, a long GC pause, a frozen VM) and
//! resume with a decision that is no longer true. A holder whose last renew is too old stops
//! serving before it asks the API anything.

mod cutoff;
mod election;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use super::config::FailoverConfig;
use crate::config::Topology;
use crate::kube::{micro_time, Kube, KubeError, Lease, LeaseSpec, ObjectMeta};
use crate::link::Link;
use crate::locate;
use crate::plan::failover::{lease_step, observe, LeaseMemory, LeaseStep, Timing};
use crate::session::{Logins, Session};
use crate::types::{Credentials, Role};

/// The label the Services select: `primary` on the Lease's holder, `replica` on every other pod.
pub const ROLE_LABEL: &str = "immudb/role";
/// The primary sets its role label again this often: the winner of a failover removes the
/// previous holder's, which may renew after all when its election failed.
const LABEL_REFRESH: Duration = Duration::from_secs(60);

/// What the Lease makes this pod this poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Holds the Lease, renewed in time: serves writes.
    Primary,
    /// Follows `primary` (the last holder known, None if none); `why` when nobody holds it or
    /// this pod stopped holding it.
    Replica {
        primary: Option<String>,
        why: Option<String>,
    },
}

/// What a decision may need: a session on this pod's immudb, the declared databases, the pods
/// of the release (to ask in an election), the admin's credentials for them, and the
/// synchronous acknowledgements the spec asks for.
pub struct Ask<'a> {
    pub local: &'a Session,
    pub databases: &'a [String],
    pub topology: &'a Topology,
    pub admin: &'a Credentials,
    pub acks: Option<u32>,
}

/// This pod became the holder of the Lease after `previous` (None: nobody held it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    pub previous: Option<String>,
    /// Per database, transactions the previous primary had when last seen that this pod lacks.
    pub lost: BTreeMap<String, u64>,
    /// `previous` handed the Lease to this pod before a planned stop (a switchover), rather than
    /// this pod taking it in an election.
    pub handed_over: bool,
}

pub struct Failover {
    pub config: FailoverConfig,
    kube: Kube,
    /// The agent's start, which the Lease's times count from.
    clock: Instant,
    memory: LeaseMemory,
    lease: Option<Lease>,
    /// Sessions on the other pods, kept while an election lasts (a login costs ~100 ms of CPU)
    /// and closed when it ends.
    peers: BTreeMap<String, Link>,
    /// The agent's login count, which the peers' sessions add to.
    logins: Logins,
    /// The role label as last set on the pod, and when (or, beyond failover.maxReplicas, last
    /// reported as not settable).
    labelled: Option<(Role, Instant)>,
    /// Each database's transactions on the primary as last seen, for what a failover lost.
    pub last_seen_on_primary: BTreeMap<String, u64>,
}

fn replica(primary: Option<String>, why: impl Into<String>) -> Verdict {
    Verdict::Replica {
        primary,
        why: Some(why.into()),
    }
}

impl Failover {
    /// `clock`: the agent's start.
    pub fn new(config: FailoverConfig, logins: &Logins, clock: Instant) -> Failover {
        Failover {
            logins: logins.clone(),
            kube: Kube::new(config.kube.clone()),
            config,
            clock,
            memory: LeaseMemory::default(),
            lease: None,
            peers: BTreeMap::new(),
            labelled: None,
            last_seen_on_primary: BTreeMap::new(),
        }
    }

    fn timing(&self) -> &Timing {
        &self.config.timing
    }

    /// Now on the agent's clock, read afresh before every step that acts on the Lease. (The
    /// monotonic clock runs while the process is stopped; see the README for a frozen VM.)
    fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Ok while this pod holds the Lease and its last renew is recent enough to act as primary
    /// (`Timing::fence_after`); else why not.
    pub fn serving(&self) -> Result<(), String> {
        let now = self.now();
        match self.memory.renewed_at() {
            None => Err("this pod does not hold the Lease".into()),
            Some(_) if !self.memory.fence_due(now, self.timing()) => Ok(()),
            Some(sent) => Err(format!(
                "the Lease was last renewed {:.1} s ago (this process was stopped or too slow); it may have expired",
                now.saturating_sub(sent).as_secs_f64()
            )),
        }
    }

    /// Until when this pod may say it is Ready as the primary without renewing again.
    pub fn serving_until(&self) -> Option<Instant> {
        self.memory
            .serving_until(self.timing())
            .map(|until| self.clock + until)
    }

    fn holder(&self) -> Option<String> {
        self.lease
            .as_ref()
            .and_then(|l| l.holder().map(str::to_string))
    }

    /// Why this pod, which held the Lease, may no longer act as primary (its last renew is too
    /// old: the process was stopped or too slow); it then holds the Lease no more, as far as it
    /// knows, until it renews it. The agent fences its databases before it reads the Lease again:
    /// after a pause the API may take a while to answer, and another pod may hold the Lease.
    pub fn lapsed(&mut self) -> Option<String> {
        if !self.memory.holds() {
            return None;
        }
        let why = self.serving().err()?;
        self.memory.lost();
        Some(why)
    }

    /// This poll's role.
    pub async fn decide(&mut self, ask: &Ask<'_>) -> (Verdict, Option<Takeover>) {
        let wall = SystemTime::now();
        let lease = match self.kube.get_lease(&self.config.lease).await {
            Ok(lease) => lease,
            Err(error) => return (self.unreadable(&error), None),
        };
        let previous_holder = self.holder();
        self.lease = lease;
        let record = self.lease.as_ref().map(Lease::record);
        let timing = *self.timing();
        let now = self.now();
        let state = observe(record.as_ref(), &mut self.memory, now, &timing);
        match lease_step(&self.config.me, &state, record.as_ref(), wall, &timing) {
            LeaseStep::Renew => {
                let verdict = self.renew(wall).await;
                // Holder now, another pod at the last read, and no election of ours in between:
                // that pod handed the Lease over. Counted here, by the pod that lives on.
                let giver = previous_holder.filter(|p| *p != self.config.me);
                let handed = match (&verdict, giver) {
                    (Verdict::Primary, Some(giver)) => Some(Takeover {
                        previous: Some(giver),
                        lost: BTreeMap::new(),
                        handed_over: true,
                    }),
                    _ => None,
                };
                (verdict, handed)
            }
            LeaseStep::Follow { primary } => {
                self.memory.lost();
                self.peers.clear();
                (
                    Verdict::Replica {
                        primary: Some(primary),
                        why: None,
                    },
                    None,
                )
            }
            LeaseStep::Cooldown { previous, left } => {
                self.memory.lost();
                let why = format!(
                    "the Lease of {previous} expired less than the cooldown after the last failover; no other before {} s",
                    left.as_secs()
                );
                (replica(Some(previous), why), None)
            }
            LeaseStep::Elect { previous } => {
                self.memory.lost();
                self.elect(wall, previous, ask).await
            }
        }
    }

    /// The Lease could not be read: a holder keeps serving until its fence is due.
    fn unreadable(&mut self, error: &KubeError) -> Verdict {
        tracing::warn!(%error, "cannot read the Lease");
        if self.memory.holds() && self.serving().is_ok() {
            return Verdict::Primary;
        }
        if self.memory.holds() {
            self.memory.lost();
            tracing::error!(%error, "fenced: the Lease could not be renewed in time; this pod stops serving writes");
        }
        replica(self.holder(), format!("cannot read the Lease: {error}"))
    }

    fn lease_with(&self, holder: &str, wall: SystemTime) -> Lease {
        let now = micro_time(wall);
        let duration = self.timing().lease_duration.as_secs().max(1) as u32;
        match &self.lease {
            Some(current) => {
                let mut next = current.clone();
                let same = current.holder() == Some(holder);
                let transitions = current.spec.lease_transitions.unwrap_or(0);
                next.spec = LeaseSpec {
                    holder_identity: Some(holder.to_string()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: if same {
                        current.spec.acquire_time.clone()
                    } else {
                        Some(now.clone())
                    },
                    renew_time: Some(now),
                    lease_transitions: Some(if same { transitions } else { transitions + 1 }),
                };
                next
            }
            None => Lease {
                metadata: ObjectMeta {
                    name: self.config.lease.clone(),
                    ..Default::default()
                },
                spec: LeaseSpec {
                    holder_identity: Some(holder.to_string()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                },
            },
        }
    }

    /// Writes the Lease with this pod as holder; a success counts from just before it was sent.
    async fn write(&mut self, wall: SystemTime) -> Result<(), KubeError> {
        let next = self.lease_with(&self.config.me.clone(), wall);
        self.hold(next).await
    }

    /// Writes `next`, which names this pod as holder (an update of the Lease read last, or a
    /// new one); a success counts as a renew from just before it was sent.
    async fn hold(&mut self, next: Lease) -> Result<(), KubeError> {
        let sent = self.now();
        let written = match &self.lease {
            Some(_) => self.kube.replace_lease(&next).await?,
            None => self.kube.create_lease(&next).await?,
        };
        self.memory
            .renewed(&written.metadata.resource_version, sent);
        self.lease = Some(written);
        Ok(())
    }

    async fn renew(&mut self, wall: SystemTime) -> Verdict {
        match self.write(wall).await {
            Ok(()) => Verdict::Primary,
            Err(KubeError::Conflict(_)) => {
                self.memory.lost();
                replica(None, "another pod changed the Lease; reading it again")
            }
            Err(error) if self.serving().is_err() => {
                self.memory.lost();
                tracing::error!(%error, "fenced: the Lease could not be renewed in time; this pod stops serving writes");
                replica(None, format!("fenced: could not renew the Lease: {error}"))
            }
            Err(error) => {
                tracing::warn!(%error, "could not renew the Lease; retrying at the next poll");
                Verdict::Primary
            }
        }
    }

    /// Every pod of the release but this one, as many as the replica StatefulSet has now
    /// (`kubectl scale` and an HPA add pods that replicate, so may hold acknowledged writes, and
    /// remove pods that then never answer). Arranged around this pod as the primary.
    pub async fn others(&self, topology: &Topology) -> Result<Topology, KubeError> {
        let every = locate::every_pod(topology, &self.kube).await?;
        Ok(locate::with_primary(&every, &self.config.me))
    }

    /// The Kubernetes API, for the hand-over's look at the release's pods.
    pub(super) fn kube(&self) -> &Kube {
        &self.kube
    }

    /// Renews the Lease now: a hand-over starts with a whole lease duration before anyone may
    /// call it expired.
    pub(super) async fn renew_now(&mut self) -> Result<(), KubeError> {
        self.write(SystemTime::now()).await
    }

    /// The Lease as this pod hands it to `holder`: its acquireTime stays the last failover's, so
    /// the cooldown counts from failovers, never from a planned hand-over.
    fn handed(&self, holder: &str) -> Lease {
        let mut next = self.lease_with(holder, SystemTime::now());
        if let Some(current) = &self.lease {
            next.spec
                .acquire_time
                .clone_from(&current.spec.acquire_time);
        }
        next
    }

    /// Hands the Lease to `to` (a switchover): an update on the version this pod last wrote, so
    /// it fails when anyone changed the Lease since. This pod holds it no more.
    pub(super) async fn hand_to(&mut self, to: &str) -> Result<(), KubeError> {
        let written = self.kube.replace_lease(&self.handed(to)).await?;
        self.memory.lost();
        self.lease = Some(written);
        Ok(())
    }

    /// Takes back a Lease this pod handed over, on the version it wrote: a Conflict means the
    /// new holder renewed it (it took over).
    pub(super) async fn take_back(&mut self) -> Result<(), KubeError> {
        let me = self.config.me.clone();
        self.hold(self.handed(&me)).await
    }

    /// Gives the Lease up (a holder that cannot serve: its databases were lost with its volume),
    /// so the most advanced pod is elected; this pod then copies the data back as a replica.
    pub async fn release(&mut self) {
        let Some(mut lease) = self.lease.clone() else {
            return;
        };
        lease.spec.holder_identity = None;
        match self.kube.replace_lease(&lease).await {
            Ok(written) => {
                tracing::warn!("gave the Lease up: this pod lost its databases, a replica holding them takes over");
                self.lease = Some(written);
                self.memory.lost();
            }
            Err(error) => tracing::warn!(%error, "could not give the Lease up"),
        }
    }

    /// Labels the pod with `role` unless it already carries it; a failure is retried next poll.
    /// A pod beyond failover.maxReplicas may not (the Role does not name it): it says so once.
    /// The primary's label is set again every [`LABEL_REFRESH`].
    pub async fn label(&mut self, role: Role) {
        let current = |(labelled, at): &(Role, Instant)| {
            *labelled == role && (role != Role::Primary || at.elapsed() < LABEL_REFRESH)
        };
        if self.labelled.as_ref().is_some_and(current) {
            return;
        }
        if !self.config.eligible.contains(&self.config.me) {
            tracing::warn!(
                pod = %self.config.pod_name,
                "this pod is beyond failover.maxReplicas: it replicates and counts in elections, but may not set its role label, so no Service routes to it and it is never elected; raise failover.maxReplicas"
            );
            self.labelled = Some((role, Instant::now()));
            return;
        }
        let value = role.to_string();
        match self
            .kube
            .label_pod(&self.config.pod_name, ROLE_LABEL, Some(&value))
            .await
        {
            Ok(()) => {
                let changed = self.labelled.is_none_or(|(labelled, _)| labelled != role);
                if changed {
                    tracing::info!(pod = %self.config.pod_name, role = %value, "labelled the pod");
                }
                self.labelled = Some((role, Instant::now()));
            }
            Err(error) => tracing::warn!(%error, "could not label the pod"),
        }
    }
}

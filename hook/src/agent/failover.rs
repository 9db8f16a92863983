//! Failover in the agent: each poll it reads the release's Lease and decides (`plan::failover`)
//! whether this pod is the primary (it holds the Lease and renewed it in time) or a replica of
//! the holder; when nobody holds it, it compares every pod's transactions and the most advanced
//! takes it with an optimistic update (a conflict means another pod won). It labels its own pod
//! with its role, which the write and read Services select.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use futures::future::join_all;

use crate::client::{Client, RpcError};
use crate::config::Topology;
use crate::kube::{micro_time, Kube, KubeConfig, KubeError, Lease, LeaseSpec, ObjectMeta};
use crate::link::{Dial, Link};
use crate::locate;
use crate::plan::failover::{
    self, elect, lease_step, observe, Election, ElectionRules, LeaseMemory, LeaseStep, Peer,
    Position, Timing, TxPosition,
};
use crate::session::{Logins, Session};
use crate::types::{Credentials, Role};
use crate::wait::SystemResolver;

/// The label the Services select: `primary` on the Lease's holder, `replica` on every other pod.
pub const ROLE_LABEL: &str = "immudb/role";
/// How long a peer may take to say what it holds during an election.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct FailoverConfig {
    pub kube: KubeConfig,
    pub lease: String,
    /// This pod's name, for its label.
    pub pod_name: String,
    /// This pod's address: its identity in the Lease and what the others dial.
    pub me: String,
    pub timing: Timing,
    pub allow_data_loss: bool,
    /// The pods that may label themselves and so be elected (`ElectionRules::eligible`).
    pub eligible: BTreeSet<String>,
    /// The primary StatefulSet, whose revision orders a rollout (`switchover`).
    pub primary_statefulset: Option<String>,
    /// How long a stopping primary waits for the rollout to reach every other pod.
    pub rollout_wait: Duration,
    /// The bound of a hand-over, after which the primary keeps the Lease through its restart.
    pub switchover_timeout: Duration,
}

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

/// This pod took the Lease from `previous` (None: nobody held it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    pub previous: Option<String>,
    /// Per database, transactions the previous primary had when last seen that this pod lacks.
    pub lost: BTreeMap<String, u64>,
}

pub struct Failover {
    pub config: FailoverConfig,
    kube: Kube,
    memory: LeaseMemory,
    lease: Option<Lease>,
    /// Sessions on the other pods, kept while an election lasts (a login costs ~100 ms of CPU)
    /// and closed when it ends.
    peers: BTreeMap<String, Link>,
    /// The agent's login count, which the peers' sessions add to.
    logins: Logins,
    /// The role label as last set on the pod (or, beyond failover.maxReplicas, last reported
    /// as not settable).
    labelled: Option<Role>,
    /// Each database's transactions on the primary as last seen, for what a failover lost.
    pub last_seen_on_primary: BTreeMap<String, u64>,
}

fn replica(primary: Option<String>, why: impl Into<String>) -> Verdict {
    Verdict::Replica {
        primary,
        why: Some(why.into()),
    }
}

/// What `session`'s server holds of `databases`: each one's transactions, and whether one of
/// them is writable.
pub async fn position_of(session: &Client, databases: &[String]) -> Result<Position, RpcError> {
    let listed = session.list_databases().await?;
    let mut position = Position::default();
    for name in databases {
        let Some(db) = listed.iter().find(|d| &d.name == name) else {
            position
                .transactions
                .insert(name.clone(), TxPosition::default());
            continue;
        };
        position.writable |= !db.replication.replica;
        position.fenced |= failover::is_fenced(db);
        let held = if db.loaded {
            session.use_database(name).await?;
            session.position().await?.0
        } else {
            TxPosition::default()
        };
        position.transactions.insert(name.clone(), held);
    }
    Ok(position)
}

impl Failover {
    pub fn new(config: FailoverConfig, logins: &Logins) -> Failover {
        Failover {
            logins: logins.clone(),
            kube: Kube::new(config.kube.clone()),
            config,
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

    fn holder(&self) -> Option<String> {
        self.lease
            .as_ref()
            .and_then(|l| l.holder().map(str::to_string))
    }

    /// This poll's role.
    pub async fn decide(&mut self, now: Duration, ask: &Ask<'_>) -> (Verdict, Option<Takeover>) {
        let wall = SystemTime::now();
        let lease = match self.kube.get_lease(&self.config.lease).await {
            Ok(lease) => lease,
            Err(error) => return (self.unreadable(now, &error), None),
        };
        self.lease = lease;
        let record = self.lease.as_ref().map(Lease::record);
        let timing = *self.timing();
        let state = observe(record.as_ref(), &mut self.memory, now, &timing);
        match lease_step(&self.config.me, &state, record.as_ref(), wall, &timing) {
            LeaseStep::Renew => (self.renew(now, wall).await, None),
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
                self.elect(now, wall, previous, ask).await
            }
        }
    }

    /// The Lease could not be read: a holder keeps serving until its fence is due.
    fn unreadable(&mut self, now: Duration, error: &KubeError) -> Verdict {
        tracing::warn!(%error, "cannot read the Lease");
        if self.memory.holds() && !self.memory.fence_due(now, self.timing()) {
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

    /// Writes the Lease with this pod as holder; `sent` is when the write was sent.
    async fn write(&mut self, sent: Duration, wall: SystemTime) -> Result<(), KubeError> {
        let next = self.lease_with(&self.config.me.clone(), wall);
        let written = match &self.lease {
            Some(_) => self.kube.replace_lease(&next).await?,
            None => self.kube.create_lease(&next).await?,
        };
        self.memory
            .renewed(&written.metadata.resource_version, sent);
        self.lease = Some(written);
        Ok(())
    }

    async fn renew(&mut self, now: Duration, wall: SystemTime) -> Verdict {
        match self.write(now, wall).await {
            Ok(()) => Verdict::Primary,
            Err(KubeError::Conflict(_)) => {
                self.memory.lost();
                replica(None, "another pod changed the Lease; reading it again")
            }
            Err(error) if self.memory.fence_due(now, self.timing()) => {
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

    /// What every other pod of `others` holds, asked concurrently; None for those that do not
    /// answer.
    async fn peer_positions(&mut self, others: &Topology, ask: &Ask<'_>) -> Vec<Peer> {
        let (admin, databases) = (ask.admin, ask.databases);
        let members: BTreeSet<&String> = others.replicas.iter().collect();
        // A pod scaled away is asked no more.
        self.peers.retain(|host, _| members.contains(host));
        for host in members {
            self.peers.entry(host.clone()).or_insert_with(|| {
                let resolver = Dial::Resolve(SystemResolver::new(others));
                Link::new(host, resolver, others, &self.logins)
            });
        }
        let defaultdb = ["defaultdb".to_string()];
        let defaultdb = &defaultdb;
        let asks = self.peers.iter_mut().map(|(host, link)| async move {
            let ask = link.call(admin, defaultdb, |session| async move {
                position_of(&session, databases).await
            });
            let position = match tokio::time::timeout(ASK_TIMEOUT, ask).await {
                Ok(Ok(position)) => Some(position),
                Ok(Err(error)) => {
                    tracing::info!(peer = %host, %error, "the pod did not say what it holds");
                    None
                }
                // The call was cut short: its session may be in any state, start again.
                Err(_) => {
                    link.reset();
                    None
                }
            };
            Peer {
                host: host.clone(),
                position,
            }
        });
        join_all(asks).await
    }

    async fn elect(
        &mut self,
        now: Duration,
        wall: SystemTime,
        previous: Option<String>,
        ask: &Ask<'_>,
    ) -> (Verdict, Option<Takeover>) {
        let databases = ask.databases;
        let mine = ask
            .local
            .retry(|session| async move { position_of(&session, databases).await })
            .await;
        let mine = match mine {
            Ok(mine) => mine,
            Err(error) => {
                return (
                    replica(
                        previous,
                        format!("cannot read this pod's position: {error}"),
                    ),
                    None,
                )
            }
        };
        let others = match self.others(ask.topology).await {
            Ok(others) => others,
            Err(error) => {
                let why = format!("cannot count the release's pods: {error}");
                return (replica(previous, why), None);
            }
        };
        let peers = self.peer_positions(&others, ask).await;
        let rules = ElectionRules {
            acks: ask.acks,
            allow_data_loss: self.config.allow_data_loss,
            preferred: ask.topology.primary.clone(),
            eligible: self.config.eligible.clone(),
        };
        match elect(&self.config.me, &mine, previous.as_deref(), &peers, &rules) {
            Election::Take => {}
            Election::Defer { to } => {
                return (
                    replica(
                        previous,
                        format!("{to} holds at least as much; it takes the Lease"),
                    ),
                    None,
                )
            }
            Election::Wait(why) => return (replica(previous, why), None),
        }
        match self.write(now, wall).await {
            Ok(()) => {
                self.peers.clear();
                let failed_over = previous.filter(|p| *p != self.config.me);
                let lost = match &failed_over {
                    Some(_) => {
                        failover::lost_transactions(&self.last_seen_on_primary, &mine.transactions)
                    }
                    None => BTreeMap::new(),
                };
                let takeover = Takeover {
                    previous: failed_over,
                    lost,
                };
                (Verdict::Primary, Some(takeover))
            }
            Err(KubeError::Conflict(_)) => {
                (replica(previous, "another pod took the Lease first"), None)
            }
            Err(error) => (
                replica(previous, format!("could not take the Lease: {error}")),
                None,
            ),
        }
    }

    /// The Kubernetes API, for the hand-over's look at the release's pods.
    pub(super) fn kube(&self) -> &Kube {
        &self.kube
    }

    /// Renews the Lease now: a hand-over starts with a whole lease duration before anyone may
    /// call it expired.
    pub(super) async fn renew_now(&mut self, now: Duration) -> Result<(), KubeError> {
        self.write(now, SystemTime::now()).await
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
    pub(super) async fn take_back(&mut self, now: Duration) -> Result<(), KubeError> {
        let me = self.config.me.clone();
        let written = self.kube.replace_lease(&self.handed(&me)).await?;
        self.memory.renewed(&written.metadata.resource_version, now);
        self.lease = Some(written);
        Ok(())
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
    pub async fn label(&mut self, role: Role) {
        if self.labelled == Some(role) {
            return;
        }
        if !self.config.eligible.contains(&self.config.me) {
            tracing::warn!(
                pod = %self.config.pod_name,
                "this pod is beyond failover.maxReplicas: it replicates and counts in elections, but may not set its role label, so no Service routes to it and it is never elected; raise failover.maxReplicas"
            );
            self.labelled = Some(role);
            return;
        }
        let value = role.to_string();
        match self
            .kube
            .label_pod(&self.config.pod_name, ROLE_LABEL, Some(&value))
            .await
        {
            Ok(()) => {
                tracing::info!(pod = %self.config.pod_name, role = %value, "labelled the pod");
                self.labelled = Some(role);
            }
            Err(error) => tracing::warn!(%error, "could not label the pod"),
        }
    }
}

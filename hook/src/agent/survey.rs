//! The hand-over's look at the release (for `plan::switchover`): whether a StatefulSet is
//! rolling (two GETs, every poll of a primary), and then each pod's revision and whether it is
//! stopping (the Kubernetes API), each other pod's immudb version (ServerInfo, no login) and its
//! agent's /readyz, and, only when handing over, what each holds (the admin's sessions).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::join_all;

use super::poll::{defaultdb, Agent};
use super::position::position_of;
use crate::client::{Client, Target};
use crate::config::Topology;
use crate::kube::{Kube, PodView, StatefulSetView};
use crate::locate;
use crate::plan::cutoff::pod_of;
use crate::plan::switchover::{Me, Member, Revision};
use crate::wait::SystemResolver;

/// How long a peer may take to answer one look.
const LOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// The release's StatefulSets as last read: whether a rollout is under way.
#[derive(Clone, Debug, Default)]
pub(super) struct Rollouts {
    /// The primary StatefulSet's (None: not named, or unreadable).
    pub primary: Option<StatefulSetView>,
    /// The replica StatefulSet's.
    pub read: Option<StatefulSetView>,
}

impl Rollouts {
    pub fn any(&self) -> bool {
        [&self.primary, &self.read]
            .into_iter()
            .flatten()
            .any(StatefulSetView::rolling)
    }
}

/// What the hand-over saw of the release: this pod, the others, and how to reach them.
pub(super) struct Survey {
    pub me: Me,
    pub members: Vec<Member>,
    /// Each other pod's address, for its agent's port.
    pub addresses: BTreeMap<String, IpAddr>,
}

/// A StatefulSet pod's ordinal (`<statefulset>-<ordinal>`).
fn ordinal(pod: &str) -> Option<u32> {
    pod.rsplit_once('-')?.1.parse().ok()
}

/// Where a pod of `statefulset` stands in its rollout, as `pod` (None: no such pod) shows.
fn revision_of(statefulset: Option<&StatefulSetView>, pod: Option<&PodView>) -> Revision {
    let Some(statefulset) = statefulset.filter(|s| s.rolling()) else {
        return Revision::Settled;
    };
    match pod {
        Some(view) if view.revision == statefulset.update_revision => Revision::Updated,
        Some(_) => Revision::Outdated,
        None => Revision::Missing,
    }
}

/// Pod `pod`, read once: where it stands in the rollout of `statefulset`, and whether it is
/// being deleted (its preStop runs). An unreadable pod is missing and not stopping (logged).
async fn pod_state(
    kube: &Kube,
    statefulset: Option<&StatefulSetView>,
    pod: &str,
) -> (Revision, bool) {
    let view = kube.pod(pod).await.unwrap_or_else(|error| {
        tracing::info!(pod, %error, "cannot read the pod");
        None
    });
    let stopping = view.as_ref().is_some_and(|v| v.terminating);
    (revision_of(statefulset, view.as_ref()), stopping)
}

/// Its immudb's version, no login needed.
async fn version(topology: &Topology, host: &str, ip: IpAddr) -> Option<String> {
    let target = Target {
        host: host.to_string(),
        address: SocketAddr::new(ip, topology.grpc_port),
        tls: topology.tls.clone(),
    };
    let client = Client::new(&target).ok()?;
    tokio::time::timeout(LOOK_TIMEOUT, client.server_version())
        .await
        .ok()?
        .ok()
}

/// Whether its agent answers /readyz with 200 within a look.
async fn agent_ready(http: &reqwest::Client, ip: IpAddr, port: u16) -> bool {
    let url = format!("http://{}/readyz", SocketAddr::new(ip, port));
    let answer = http.get(&url).timeout(LOOK_TIMEOUT).send().await;
    matches!(answer, Ok(r) if r.status().is_success())
}

impl Agent {
    /// The release's StatefulSets now; an unreadable one counts as not rolling (logged).
    pub(super) async fn rollouts(&self) -> Rollouts {
        let Some(failover) = &self.failover else {
            return Rollouts::default();
        };
        let read = |name: Option<String>| async move {
            let name = name?;
            match failover.kube().statefulset(&name).await {
                Ok(view) => Some(view),
                Err(error) => {
                    tracing::debug!(statefulset = %name, %error, "cannot read the StatefulSet; no rollout seen");
                    None
                }
            }
        };
        let read_name = self
            .config
            .topology
            .replica_pods
            .as_ref()
            .map(|p| p.statefulset.clone());
        let (primary, read) = tokio::join!(
            read(failover.config.primary_statefulset.clone()),
            read(read_name)
        );
        Rollouts { primary, read }
    }

    /// Every other pod of the release and this one, as `plan::switchover` needs them to decide
    /// when to hand over.
    pub(super) async fn survey(
        &mut self,
        stopping_now: bool,
        rollouts: &Rollouts,
    ) -> Result<Survey, String> {
        let my_version = self
            .on_local(|s| async move { s.server_version().await })
            .await?;
        let failover = self.failover.as_ref().expect("a survey has failover");
        let topology = &self.config.topology;
        // The replica StatefulSet was just read for its rollout: its pod count is there.
        let others = match &rollouts.read {
            Some(read) => locate::with_primary(
                &locate::with_replica_count(topology, read.pods),
                &failover.config.me,
            ),
            None => failover
                .others(topology)
                .await
                .map_err(|e| format!("cannot count the release's pods: {e}"))?,
        };
        let statefulset_of = |host: &str| {
            if host == topology.primary {
                rollouts.primary.as_ref()
            } else {
                rollouts.read.as_ref()
            }
        };
        let kube = failover.kube();
        // This pod's own stopping is known; its pod is read only while a rollout runs.
        let my_statefulset = statefulset_of(&failover.config.me);
        let revision = match my_statefulset.is_some_and(StatefulSetView::rolling) {
            true => {
                pod_state(kube, my_statefulset, &failover.config.pod_name)
                    .await
                    .0
            }
            false => Revision::Settled,
        };
        let me = Me {
            version: my_version,
            revision,
            stopping: stopping_now,
        };
        let resolver = SystemResolver::new(topology);
        let http = &self.http;
        let agent_port = self.config.listen.port();
        let my_host = failover.config.me.clone();
        // The replica StatefulSet rolls its pods from the highest ordinal down.
        let rolled_after_me = |host: &str| {
            let same_set = host != topology.primary && my_host != topology.primary;
            same_set && pod_of(host).and_then(ordinal) < pod_of(&my_host).and_then(ordinal)
        };
        let looks = others.replicas.iter().map(|host| {
            let resolver = &resolver;
            let eligible = failover.config.eligible.contains(host);
            async move {
                let ip = resolver.resolve(host).await.ok();
                let pod = pod_of(host).unwrap_or(host);
                // Only the pods the Role names may be read; the others are never a target.
                let (revision, stopping) = match eligible && topology.replica_pods.is_some() {
                    true => pod_state(kube, statefulset_of(host), pod).await,
                    false => (Revision::Settled, false),
                };
                let (version, ready) = match ip {
                    Some(ip) => (
                        version(topology, host, ip).await,
                        agent_ready(http, ip, agent_port).await,
                    ),
                    None => (None, false),
                };
                let member = Member {
                    host: host.clone(),
                    eligible,
                    position: None,
                    version,
                    ready,
                    stopping,
                    revision,
                    rolled_after_me: rolled_after_me(host),
                };
                (member, ip)
            }
        });
        let looked = join_all(looks).await;
        let mut members = Vec::new();
        let mut addresses = BTreeMap::new();
        for (member, ip) in looked {
            if let Some(ip) = ip {
                addresses.insert(member.host.clone(), ip);
            }
            members.push(member);
        }
        Ok(Survey {
            me,
            members,
            addresses,
        })
    }
}

impl Agent {
    /// What each member that may take over holds of `databases`, over the admin's sessions
    /// kept in `peers` for the hand-over (a login on each).
    pub(super) async fn positions(&mut self, members: &mut [Member], databases: &[String]) {
        let admin = self.config.admin.clone();
        let topology = &self.config.topology;
        let defaultdb = defaultdb();
        for member in members.iter_mut().filter(|m| m.eligible && !m.stopping) {
            let link = self
                .handover
                .peers
                .link(&member.host, topology, &self.logins);
            let call = link.call(&admin, &defaultdb, |session| async move {
                position_of(&session, databases).await
            });
            member.position = match tokio::time::timeout(LOOK_TIMEOUT, call).await {
                Ok(Ok(position)) => Some(position),
                Ok(Err(error)) => {
                    tracing::info!(peer = %member.host, %error, "the pod did not say what it holds");
                    None
                }
                Err(_) => {
                    link.reset();
                    None
                }
            };
        }
    }
}

//! The election: what every pod holds (asked concurrently, each call bounded), who is the most
//! advanced (`plan::failover::elect`), and, when this pod is, the cut-off before it takes the
//! Lease.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use futures::future::join_all;

use super::{replica, Ask, Failover, Takeover, Verdict};
use crate::agent::config::other_pod_limit;
use crate::agent::poll::defaultdb;
use crate::agent::position::position_of;
use crate::client::{Client, RpcError};
use crate::config::Topology;
use crate::kube::KubeError;
use crate::link::Link;
use crate::plan::cutoff::{cutoff, Cutoff};
use crate::plan::failover::{self, elect, Election, ElectionRules, Peer, Position};
use crate::types::Credentials;

impl Failover {
    /// Links to every other pod of `others`; a pod scaled away is asked no more.
    pub(super) fn link_peers(&mut self, others: &Topology) {
        let members: BTreeSet<&String> = others.replicas.iter().collect();
        self.peers.retain(|host, _| members.contains(host));
        for host in members {
            let limit = other_pod_limit(self.config.timing.poll_interval);
            self.peers
                .entry(host.clone())
                .or_insert_with(|| Link::resolving(host, others, &self.logins).within(limit));
        }
    }

    /// `call` on each linked peer in `hosts`, concurrently, each within
    /// [`other_pod_limit`], over the admin's session; None for those that do not answer.
    pub(super) async fn ask_peers<T, F, Fut>(
        &mut self,
        hosts: &BTreeSet<String>,
        admin: &Credentials,
        call: F,
    ) -> Vec<(String, Option<T>)>
    where
        F: Fn(&str, Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, RpcError>>,
    {
        let defaultdb = defaultdb();
        let (defaultdb, call) = (&defaultdb, &call);
        let asks = self
            .peers
            .iter_mut()
            .filter(|(host, _)| hosts.contains(*host))
            .map(|(host, link)| async move {
                let answer = link.call(admin, defaultdb, |session| call(host, session));
                let answer = answer
                    .await
                    .inspect_err(
                        |error| tracing::info!(peer = %host, %error, "the pod did not answer"),
                    )
                    .ok();
                (host.clone(), answer)
            });
        join_all(asks).await
    }

    /// What each peer in `hosts` holds; None for those that do not answer.
    async fn peer_positions(&mut self, hosts: &BTreeSet<String>, ask: &Ask<'_>) -> Vec<Peer> {
        let databases = ask.databases;
        let answers = self
            .ask_peers(hosts, ask.admin, |_, session| async move {
                position_of(&session, databases).await
            })
            .await;
        answers
            .into_iter()
            .map(|(host, position)| Peer { host, position })
            .collect()
    }

    /// What this pod and each peer in `hosts` hold.
    async fn positions(
        &mut self,
        hosts: &BTreeSet<String>,
        ask: &Ask<'_>,
    ) -> Result<(Position, Vec<Peer>), String> {
        let databases = ask.databases;
        let mine = ask
            .local
            .retry(|session| async move { position_of(&session, databases).await })
            .await
            .map_err(|error| format!("cannot read this pod's position: {error}"))?;
        Ok((mine, self.peer_positions(hosts, ask).await))
    }

    /// An election's verdict for this pod: None when it takes the Lease.
    fn declined(election: Election, previous: &Option<String>) -> Option<Verdict> {
        match election {
            Election::Take => None,
            Election::Defer { to } => Some(replica(
                previous.clone(),
                format!("{to} holds at least as much; it takes the Lease"),
            )),
            Election::Wait(why) => Some(replica(previous.clone(), why)),
        }
    }

    /// Compares every pod's position; when this pod is the most advanced it cuts the previous
    /// holder off (`plan::cutoff`), compares again what the pods that answered hold now, and
    /// takes the Lease.
    pub(super) async fn elect(
        &mut self,
        wall: SystemTime,
        previous: Option<String>,
        ask: &Ask<'_>,
    ) -> (Verdict, Option<Takeover>) {
        let others = match self.others(ask.topology).await {
            Ok(others) => others,
            Err(error) => {
                let why = format!("cannot count the release's pods: {error}");
                return (replica(previous, why), None);
            }
        };
        self.link_peers(&others);
        let rules = ElectionRules {
            acks: ask.acks,
            allow_data_loss: self.config.allow_data_loss,
            preferred: ask.topology.primary.clone(),
            eligible: self.config.eligible.clone(),
        };
        let me = self.config.me.clone();
        let everyone: BTreeSet<String> = others.replicas.iter().cloned().collect();
        let (mine, peers) = match self.positions(&everyone, ask).await {
            Ok(positions) => positions,
            Err(why) => return (replica(previous, why), None),
        };
        let election = elect(&me, &mine, previous.as_deref(), &peers, &rules);
        if let Some(verdict) = Failover::declined(election, &previous) {
            return (verdict, None);
        }
        let cutoff = cutoff(previous.as_deref(), &me, &peers);
        let mine = if cutoff == Cutoff::default() {
            mine
        } else {
            if let Err(why) = self.cut_off(&cutoff, ask.admin).await {
                return (replica(previous, why), None);
            }
            // They can acknowledge nothing more on the old primary: decide on what they hold
            // now.
            let answered: BTreeSet<String> = peers
                .iter()
                .filter(|p| p.position.is_some())
                .map(|p| p.host.clone())
                .collect();
            let (mine, mut peers) = match self.positions(&answered, ask).await {
                Ok(positions) => positions,
                Err(why) => return (replica(previous, why), None),
            };
            peers.extend(everyone.difference(&answered).map(|host| Peer {
                host: host.clone(),
                position: None,
            }));
            let election = elect(&me, &mine, previous.as_deref(), &peers, &rules);
            if let Some(verdict) = Failover::declined(election, &previous) {
                return (verdict, None);
            }
            mine
        };
        match self.write(wall).await {
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
                    handed_over: false,
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
}

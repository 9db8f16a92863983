//! Automatic failover's decisions, pure: what the Lease says (held, expired, free), what the
//! agent does about it (renew, follow, elect, fence), who wins an election, whether a returning
//! primary can follow the new one, and what a failover lost. The agent's loop (`agent::failover`)
//! reads the Lease and the peers and applies what these functions decide.
//!
//! Time comes in two kinds: `now` is the agent's monotonic clock (durations since it started),
//! used for everything that decides safety (expiry, fencing), so a clock step or skew between
//! nodes cannot make two pods primary; wall-clock time appears only in the cooldown, which is a
//! guard against flapping, not a safety property.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use super::{
    Action, Observed, ObservedDatabase, PrimaryDesired, ReplicaDesired, ReplicaOptions,
    ReplicationSettings, StorageSettings,
};

/// The Lease as read from the Kubernetes API (coordination.k8s.io/v1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The holder's address (its pod's DNS name); None when nobody holds it.
    pub holder: Option<String>,
    /// When the current holder acquired it (wall clock, its own).
    pub acquired: Option<SystemTime>,
    /// How many times the holder changed.
    pub transitions: u32,
    /// Changes on every write: what tells the agent that the holder renewed.
    pub version: String,
}

/// The timing every agent of a release shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A Lease not renewed for this long (as each agent measures it) has expired.
    pub lease_duration: Duration,
    pub poll_interval: Duration,
    /// The longest a Kubernetes API call may take.
    pub call_timeout: Duration,
    /// After a failover, no other for this long.
    pub cooldown: Duration,
}

impl Timing {
    /// A holder whose last successful renew was sent this long ago stops acting as primary: the
    /// next poll (one interval later, plus a call) could come after the others see the Lease
    /// expire, and they measure from a moment no earlier than that renew.
    pub fn fence_after(&self) -> Duration {
        self.lease_duration
            .saturating_sub(self.poll_interval + self.call_timeout)
    }
}

/// What the agent remembers about the Lease between polls.
#[derive(Clone, Debug, Default)]
pub struct LeaseMemory {
    /// The version last seen and when it was first seen.
    seen: Option<(String, Duration)>,
    /// When the last renew (or acquisition) that succeeded was sent.
    renewed: Option<Duration>,
}

impl LeaseMemory {
    /// A renew or acquisition sent at `sent` succeeded and produced `version`.
    pub fn renewed(&mut self, version: &str, sent: Duration) {
        self.seen = Some((version.to_string(), sent));
        self.renewed = Some(sent);
    }

    /// This pod holds the Lease, as far as it knows.
    pub fn holds(&self) -> bool {
        self.renewed.is_some()
    }

    /// When the last successful renew (or acquisition) was sent.
    pub fn renewed_at(&self) -> Option<Duration> {
        self.renewed
    }

    /// Until when a holder may act as primary: its last renew plus [`Timing::fence_after`].
    pub fn serving_until(&self, timing: &Timing) -> Option<Duration> {
        self.renewed.map(|sent| sent + timing.fence_after())
    }

    /// This pod no longer holds the Lease.
    pub fn lost(&mut self) {
        self.renewed = None;
    }

    /// A holder must stop acting as primary: it has not renewed for [`Timing::fence_after`]
    /// (or never did since the agent started).
    pub fn fence_due(&self, now: Duration, timing: &Timing) -> bool {
        self.serving_until(timing).is_none_or(|until| now >= until)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// No Lease, or one without a holder.
    Free,
    /// Renewed within the lease duration, as this agent measures it.
    Held { holder: String },
    /// Not renewed for a whole lease duration.
    Expired { holder: String },
}

/// Reads the Lease against what the agent saw before: a Lease expires when its version has not
/// changed for a lease duration since this agent first saw that version. An agent that just
/// started therefore waits a whole duration before it calls a Lease expired.
pub fn observe(
    lease: Option<&LeaseRecord>,
    memory: &mut LeaseMemory,
    now: Duration,
    timing: &Timing,
) -> LeaseState {
    let Some(lease) = lease else {
        memory.seen = None;
        return LeaseState::Free;
    };
    let since = match &memory.seen {
        Some((version, since)) if *version == lease.version => *since,
        _ => {
            memory.seen = Some((lease.version.clone(), now));
            now
        }
    };
    match &lease.holder {
        None => LeaseState::Free,
        Some(holder) if now.saturating_sub(since) >= timing.lease_duration => LeaseState::Expired {
            holder: holder.clone(),
        },
        Some(holder) => LeaseState::Held {
            holder: holder.clone(),
        },
    }
}

/// What the agent does with the Lease this poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// This pod holds it (or held it last and nobody took it since): renew.
    Renew,
    /// Another pod holds it: follow that primary.
    Follow { primary: String },
    /// Nobody holds it: compare with the peers and let the most advanced take it.
    Elect { previous: Option<String> },
    /// It expired, but the last failover was less than a cooldown ago.
    Cooldown { previous: String, left: Duration },
}

pub fn lease_step(
    me: &str,
    state: &LeaseState,
    lease: Option<&LeaseRecord>,
    wall: SystemTime,
    timing: &Timing,
) -> LeaseStep {
    match state {
        LeaseState::Held { holder } | LeaseState::Expired { holder } if holder == me => {
            LeaseStep::Renew
        }
        LeaseState::Held { holder } => LeaseStep::Follow {
            primary: holder.clone(),
        },
        LeaseState::Free => LeaseStep::Elect { previous: None },
        LeaseState::Expired { holder } => {
            // The first acquisition is not a failover; every later change of holder is.
            let failover_at = lease.filter(|l| l.transitions > 0).and_then(|l| l.acquired);
            let elapsed = failover_at.map(|at| wall.duration_since(at).unwrap_or_default());
            match elapsed {
                Some(elapsed) if elapsed < timing.cooldown => LeaseStep::Cooldown {
                    previous: holder.clone(),
                    left: timing.cooldown - elapsed,
                },
                _ => LeaseStep::Elect {
                    previous: Some(holder.clone()),
                },
            }
        }
    }
}

/// One database's transactions on one pod, from `CurrentState`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxPosition {
    /// Stored but not yet committed: with synchronous replication a replica acknowledges a
    /// transaction once it holds it precommitted, so this is what decides who has every
    /// acknowledged write.
    pub precommitted: u64,
    pub committed: u64,
}

/// What one pod holds, as a candidate in an election.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub transactions: BTreeMap<String, TxPosition>,
    /// Some declared database is writable there: the pod serves (or served) as primary.
    pub writable: bool,
    /// Some declared database is fenced: an earlier primary whose history has not been
    /// compared with the current one's yet. It acknowledged nothing (primaries do not) and its
    /// counts may belong to a history that split off: never a candidate.
    pub fenced: bool,
    /// The declared databases that follow a primary: each has a replicator, whose stream may
    /// still reach the old primary.
    pub replicating: BTreeSet<String>,
}

/// A pod of the release other than this one, and its position when it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub position: Option<Position>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionRules {
    /// Synchronous acknowledgements each write had (None: asynchronous replication).
    pub acks: Option<u32>,
    /// Elect the most advanced of those that answer, even with too few answers or when it
    /// lacks something another holds: the new primary may lack the last transactions.
    pub allow_data_loss: bool,
    /// The primary StatefulSet's pod, preferred at a tie (a fresh install elects it).
    pub preferred: String,
    /// The pods that may take the Lease: those that may label themselves (the chart's Role
    /// names them, up to `failover.maxReplicas`). Any other pod that answers still counts
    /// towards the quorum and its transactions still decide, but it is never elected: the
    /// write Service would select nobody.
    pub eligible: BTreeSet<String>,
}

/// Pods that must answer an election: with `acks` synchronous acknowledgements among the
/// `acknowledgers` pods that replicated from the old primary, any `acknowledgers - acks + 1`
/// of them include one that acknowledged each write.
pub fn quorum(acknowledgers: usize, acks: u32) -> usize {
    acknowledgers.saturating_sub(acks as usize) + 1
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Election {
    /// This pod is the most advanced: take the Lease.
    Take,
    /// Another pod is (it will take the Lease; a conflict on the Lease settles a race).
    Defer { to: String },
    /// Nobody takes it now, and why.
    Wait(String),
}

/// `a` holds, of every database, at least what `b` holds.
fn dominates(a: &Position, b: &Position) -> bool {
    b.transactions.iter().all(|(db, theirs)| {
        a.transactions
            .get(db)
            .is_some_and(|ours| ours.precommitted >= theirs.precommitted)
    })
}

fn total(position: &Position) -> u64 {
    position.transactions.values().map(|t| t.precommitted).sum()
}

/// Who takes a Lease nobody holds; `previous` held it last. A pod that still accepts writes
/// blocks every election: the previous primary answering read-only has fenced itself, one that
/// does not answer is gone, but one that answers writable would make two primaries.
pub fn elect(
    me: &str,
    mine: &Position,
    previous: Option<&str>,
    peers: &[Peer],
    rules: &ElectionRules,
) -> Election {
    if let Some(writable) = peers
        .iter()
        .find(|p| p.position.as_ref().is_some_and(|p| p.writable))
    {
        return Election::Wait(format!(
            "{} still accepts writes; it must stop (its agent fences it) before another pod takes over",
            writable.host
        ));
    }
    if mine.fenced {
        return Election::Wait(
            "this pod was a primary and has not compared its history with the current one".into(),
        );
    }
    let mut candidates: Vec<(&str, &Position)> = vec![(me, mine)];
    candidates.extend(peers.iter().filter_map(|p| {
        let position = p.position.as_ref().filter(|p| !p.fenced)?;
        Some((p.host.as_str(), position))
    }));
    // Who may have acknowledged writes: every pod but the old primary and fenced ones.
    let acknowledgers = 1 + peers
        .iter()
        .filter(|p| Some(p.host.as_str()) != previous)
        .filter(|p| !p.position.as_ref().is_some_and(|p| p.fenced))
        .count();
    let needed = match rules.acks {
        Some(acks) if !rules.allow_data_loss => quorum(acknowledgers, acks),
        _ => 1,
    };
    if candidates.len() < needed {
        let silent: Vec<&str> = peers
            .iter()
            .filter(|p| p.position.is_none())
            .map(|p| p.host.as_str())
            .collect();
        return Election::Wait(format!(
            "{} of {acknowledgers} pods that may hold acknowledged writes answered, {needed} must (one of them holds every acknowledged write); no answer from {}",
            candidates.len(),
            silent.join(", ")
        ));
    }
    // Ties: the serving primary, then the preferred pod, then the lowest name.
    let rank = |(host, position): &(&str, &Position)| {
        (
            !position.writable,
            *host != rules.preferred,
            host.to_string(),
        )
    };
    let dominating: Vec<(&str, &Position)> = candidates
        .iter()
        .filter(|(_, a)| candidates.iter().all(|(_, b)| dominates(a, b)))
        .copied()
        .collect();
    let eligible = |(host, _): &(&str, &Position)| rules.eligible.contains(*host);
    let mut leaders: Vec<(&str, &Position)> =
        dominating.iter().filter(|c| eligible(c)).copied().collect();
    if leaders.is_empty() {
        if !rules.allow_data_loss {
            if !dominating.is_empty() {
                let hosts: Vec<&str> = dominating.iter().map(|(host, _)| *host).collect();
                return Election::Wait(format!(
                    "only {} hold(s) the latest transaction of every database and cannot label itself (beyond failover.maxReplicas); electing another pod would lose acknowledged writes",
                    hosts.join(", ")
                ));
            }
            return Election::Wait(format!(
                "no pod holds the latest transaction of every database ({}); electing one would lose acknowledged writes",
                describe(&candidates)
            ));
        }
        let most = candidates
            .iter()
            .filter(|c| eligible(c))
            .map(|(_, p)| total(p))
            .max()
            .unwrap_or(0);
        leaders = candidates
            .iter()
            .filter(|c| eligible(c) && total(c.1) == most)
            .copied()
            .collect();
    }
    leaders.sort_by_key(rank);
    match leaders.first() {
        Some((host, _)) if *host == me => Election::Take,
        Some((host, _)) => Election::Defer {
            to: host.to_string(),
        },
        None => Election::Wait("no candidate".into()),
    }
}

fn describe(candidates: &[(&str, &Position)]) -> String {
    candidates
        .iter()
        .map(|(host, p)| {
            let counts: Vec<String> = p
                .transactions
                .iter()
                .map(|(db, t)| format!("{db}={}", t.precommitted))
                .collect();
            format!("{host}: {}", counts.join(" "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Transactions per database that the primary had when last seen and the new primary lacks:
/// what an asynchronous failover lost, at least (the old primary may have committed more after
/// it was last seen).
pub fn lost_transactions(
    last_seen_on_primary: &BTreeMap<String, u64>,
    mine: &BTreeMap<String, TxPosition>,
) -> BTreeMap<String, u64> {
    last_seen_on_primary
        .iter()
        .map(|(db, primary)| {
            let held = mine.get(db).map_or(0, |t| t.precommitted);
            (db.clone(), primary.saturating_sub(held))
        })
        .collect()
}

/// A database of a pod that must now follow another primary, compared with that primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// The last committed transaction here and its Alh.
    pub local: (u64, [u8; 32]),
    /// The primary's last committed transaction.
    pub primary_committed: u64,
    /// The primary's Alh of transaction `local.0`, when it has that transaction.
    pub primary_alh_at_local: Option<[u8; 32]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejoin {
    /// Its committed history is a prefix of the primary's: it may replicate (precommitted
    /// transactions beyond it are discarded, `allowTxDiscarding`).
    Follow,
    /// It committed transactions the primary does not have: never overwritten, left read-only.
    Diverged(String),
}

pub fn rejoin(history: &History) -> Rejoin {
    let (local, alh) = history.local;
    if local == 0 {
        return Rejoin::Follow;
    }
    if local > history.primary_committed {
        return Rejoin::Diverged(format!(
            "holds {local} committed transactions, the primary {}: the {} after it exist only here",
            history.primary_committed,
            local - history.primary_committed
        ));
    }
    match history.primary_alh_at_local {
        Some(theirs) if theirs == alh => Rejoin::Follow,
        _ => Rejoin::Diverged(format!(
            "transaction {local} differs from the primary's: the histories split before it"
        )),
    }
}

/// A database turned read-only without a primary to follow: what a pod that lost (or never
/// had) the Lease makes of a writable database at once, before it compares histories. No
/// replicator runs, so nothing is fetched, committed or discarded; synchronous replication stays
/// on so that precommitted transactions stay uncommitted (immudb commits them all when a
/// database's synchronous replication is switched off). The spec's replica options come along:
/// immudb requires a prefetch buffer and a commit concurrency of every replica, also one that
/// follows nobody (pkg/server/db_options.go, `Validate`), and the later `follow` changes only
/// the primary's address and credentials.
pub fn fenced(options: &ReplicaOptions) -> ReplicationSettings {
    ReplicationSettings {
        replica: true,
        sync_replication: options.sync_replication,
        prefetch_tx_buffer_size: options.prefetch_tx_buffer_size,
        replication_commit_concurrency: options.replication_commit_concurrency,
        allow_tx_discarding: options.allow_tx_discarding,
        skip_integrity_check: options.skip_integrity_check,
        wait_for_indexing: options.wait_for_indexing,
        ..Default::default()
    }
}

/// A replica database that follows no primary: fenced, or left so by a restore.
pub fn is_fenced(db: &ObservedDatabase) -> bool {
    db.replication.follows_nobody()
}

fn update(name: &str, replication: ReplicationSettings) -> Action {
    Action::UpdateDatabase {
        name: name.to_string(),
        replication: Some(replication),
        storage: StorageSettings::default(),
    }
}

/// The new primary's replica databases become writable: first without synchronous replication,
/// which commits every transaction the database holds precommitted (each one is the old
/// primary's, and a follower that committed one must find it committed here), then with the
/// primary's own sync settings.
pub fn promotions(desired: &PrimaryDesired, observed: &Observed) -> Vec<Action> {
    let mut actions = Vec::new();
    for db in &desired.databases {
        if observed
            .database(&db.name)
            .is_some_and(|d| d.replication.replica)
        {
            actions.push(update(&db.name, ReplicationSettings::default()));
            let primary = desired.replication();
            if primary != ReplicationSettings::default() {
                actions.push(update(&db.name, primary));
            }
        }
    }
    actions
}

/// A pod that does not hold the Lease makes each writable database read-only ([`fenced`]).
pub fn fences(desired: &ReplicaDesired, observed: &Observed) -> Vec<Action> {
    desired
        .databases
        .iter()
        .filter(|db| {
            observed
                .database(&db.name)
                .is_some_and(|d| !d.replication.replica)
        })
        .map(|db| update(&db.name, fenced(&desired.options)))
        .collect()
}

/// A fenced database whose history is a prefix of the primary's follows it now (the spec sets
/// `allowTxDiscarding` with failover, so precommitted transactions the primary lacks are dropped).
pub fn follow(desired: &ReplicaDesired, database: &str) -> Action {
    update(database, desired.replication(database))
}

#[cfg(test)]
#[path = "failover_tests.rs"]
mod tests;

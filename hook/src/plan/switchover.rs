//! The hand-over of the primary role before a planned stop, pure: when the primary's agent hands
//! over (its pod is stopping and the rollout has reached every other pod, or the rollout waits
//! for a pod that cannot become Ready while this one is primary), to whom (the most advanced pod
//! that may take over, preferring one that runs the new revision), and what that pod lacks of
//! the committed history. The agent's `switchover` reads the pods and the peers, applies these
//! decisions, and falls back to keeping the Lease when the hand-over cannot finish in time.
//!
//! The rollout order moves the role once per rollout that restarts every pod: the stopping
//! primary waits (up to a bound) until every other pod runs its StatefulSet's new revision and is
//! Ready, so the pod it hands over to is never restarted again by the same rollout. immudb
//! replicates only between equal versions: a pod restarted on another immudb version cannot
//! follow this primary and never becomes Ready, and its StatefulSet's rollout waits for it. Such a
//! pod gets the role at once (its agent copies what it lacks across versions), whether this pod
//! is stopping yet or not: otherwise the rollout, and with synchronous replication every write,
//! would wait for each other.

use std::collections::BTreeMap;
use std::time::Duration;

use super::failover::Position;

/// Another pod of the release, as the stopping primary sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its address: its identity in the Lease.
    pub host: String,
    /// It may label itself (the chart's Role names it), so it may take the Lease.
    pub eligible: bool,
    /// What its immudb holds; None when it did not answer.
    pub position: Option<Position>,
    /// Its immudb's version (ServerInfo); None when it did not answer.
    pub version: Option<String>,
    /// Its agent calls it Ready.
    pub ready: bool,
    /// Its pod is being deleted (its preStop runs): it is about to stop.
    pub stopping: bool,
    pub revision: Revision,
    /// Its StatefulSet rolls it only after this pod (the same StatefulSet, a lower ordinal: a
    /// rolling update goes from the highest ordinal down, one Ready pod at a time), so waiting
    /// for it would wait for this pod's own stop.
    pub rolled_after_me: bool,
}

/// Where a pod stands in its StatefulSet's rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revision {
    /// No rollout is under way for its StatefulSet.
    Settled,
    /// Its StatefulSet is rolling and the pod runs the new revision.
    Updated,
    /// Its StatefulSet is rolling and the pod still runs an older revision: it will be restarted.
    Outdated,
    /// Its StatefulSet is rolling and the pod does not exist (being recreated) or cannot be read.
    Missing,
}

impl Revision {
    /// It runs the revision the rollout rolls to, or no rollout is under way.
    pub fn current(self) -> bool {
        matches!(self, Revision::Settled | Revision::Updated)
    }
}

/// This pod, the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Me {
    pub version: String,
    pub revision: Revision,
    /// Its pod is being stopped (the kubelet runs the immudb container's preStop).
    pub stopping: bool,
}

/// What the primary does about the role now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum When {
    /// Hand the role over now, and why.
    Now(String),
    /// Keep serving and look again (the rollout has not reached every other pod), and why.
    Wait(String),
    /// Keep the role: not stopping, and no rollout waits for this pod.
    Stay,
}

/// The pod runs another immudb version than this primary, on its StatefulSet's new revision, and
/// is not Ready: it cannot replicate from this primary, and its rollout waits for it.
fn blocked_by(me: &Me, member: &Member) -> bool {
    member.revision == Revision::Updated
        && !member.ready
        && member
            .version
            .as_ref()
            .is_some_and(|version| *version != me.version)
}

/// The rollout still has to restart this pod, or to see it Ready on its new revision, before
/// this one.
fn pending(member: &Member) -> Option<String> {
    let host = &member.host;
    if member.rolled_after_me {
        return None;
    }
    match member.revision {
        Revision::Settled => None,
        Revision::Outdated => Some(format!("{host} runs the old revision")),
        Revision::Missing => Some(format!("{host} is being recreated")),
        Revision::Updated if !member.ready => {
            Some(format!("{host} runs the new revision, not Ready yet"))
        }
        Revision::Updated => None,
    }
}

/// When to hand over: `waited` is how long the pod has been stopping, `limit` the rollout wait.
pub fn when(me: &Me, members: &[Member], waited: Duration, limit: Duration) -> When {
    if me.revision == Revision::Outdated || me.stopping {
        if let Some(blocked) = members.iter().find(|m| blocked_by(me, m)) {
            return When::Now(format!(
                "{} runs immudb {} on the new revision and cannot follow this primary's {}: the rollout waits for it",
                blocked.host,
                blocked.version.as_deref().unwrap_or_default(),
                me.version
            ));
        }
    }
    if !me.stopping {
        return When::Stay;
    }
    let pending: Vec<String> = members.iter().filter_map(pending).collect();
    if pending.is_empty() {
        return When::Now("every other pod runs its StatefulSet's revision and is Ready".into());
    }
    if waited >= limit {
        return When::Now(format!(
            "waited {} s for the rollout, the limit: {}",
            waited.as_secs(),
            pending.join("; ")
        ));
    }
    When::Wait(pending.join("; "))
}

/// Why `member` may not take the role now (None: it may): it must be eligible, not stopping,
/// answering, neither writable nor fenced (an earlier primary whose history was not compared),
/// and Ready (or blocked by this primary's version, which only a hand-over ends).
fn unfit(me: &Me, member: &Member) -> Option<&'static str> {
    match &member.position {
        _ if !member.eligible => Some("beyond failover.maxReplicas"),
        _ if member.stopping => Some("stopping"),
        None => Some("its immudb does not answer"),
        Some(p) if p.writable => Some("writable"),
        Some(p) if p.fenced => Some("fenced"),
        Some(_) if !member.ready && !blocked_by(me, member) => Some("not Ready"),
        Some(_) => None,
    }
}

/// The pod to hand over to: of those that may take over, one on the new revision first (the
/// rollout will not restart it), then a Ready one, then the one holding the most transactions,
/// then the lowest name. Err says why there is none.
pub fn target<'a>(me: &Me, members: &'a [Member]) -> Result<&'a Member, String> {
    let mut candidates: Vec<&Member> = members.iter().filter(|m| unfit(me, m).is_none()).collect();
    candidates.sort_by_key(|m| {
        let held = m.position.as_ref().map_or(0, Position::total);
        (
            !m.revision.current(),
            !m.ready,
            std::cmp::Reverse(held),
            m.host.clone(),
        )
    });
    candidates.first().copied().ok_or_else(|| {
        let why: Vec<String> = members
            .iter()
            .map(|m| format!("{}: {}", m.host, unfit(me, m).unwrap_or("fit")))
            .collect();
        if why.is_empty() {
            "no other pod".to_string()
        } else {
            format!("no pod may take over ({})", why.join("; "))
        }
    })
}

/// Per database, the first transaction the target lacks of the primary's committed history and
/// the last to copy (`committed`, the fenced primary's CurrentState): nothing for a database
/// the target holds up to there, precommitted included (a synchronous replica holds what it
/// acknowledged precommitted; promotion commits it).
pub fn lacking(
    committed: &BTreeMap<String, u64>,
    target: &Position,
) -> BTreeMap<String, (u64, u64)> {
    committed
        .iter()
        .filter_map(|(db, &last)| {
            let held = target.transactions.get(db).map_or(0, |t| t.precommitted);
            (held < last).then(|| (db.clone(), (held + 1, last)))
        })
        .collect()
}

#[cfg(test)]
#[path = "switchover_tests.rs"]
mod tests;

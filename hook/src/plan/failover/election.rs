//! The election, pure: who takes a Lease nobody holds, comparing what each pod holds of every
//! database, with the quorum synchronous acknowledgements require, and what an asynchronous
//! failover lost.

use std::collections::{BTreeMap, BTreeSet};

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

impl Position {
    /// Transactions held across the databases, precommitted included: what elections and
    /// hand-overs rank pods by.
    pub fn total(&self) -> u64 {
        self.transactions.values().map(|t| t.precommitted).sum()
    }
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
            .map(|(_, p)| p.total())
            .max()
            .unwrap_or(0);
        leaders = candidates
            .iter()
            .filter(|c| eligible(c) && c.1.total() == most)
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

#[cfg(test)]
#[path = "election_tests.rs"]
mod tests;

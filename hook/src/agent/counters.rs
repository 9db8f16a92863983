//! What the agent counts across polls. A labelled counter exports every series the agent knows of
//! at 0 before its first event: Prometheus's `increase()` needs a sample before an event to see
//! it, so a series born at 1 hides its first event from every panel and alert.

use std::collections::BTreeMap;

use crate::plan::health::Repair;
use strum::VariantArray;

/// The labels of one series of a labelled counter.
pub trait Series: Ord + Clone {
    /// Every series the agent knows of while the spec names `databases`.
    fn known(databases: &[String]) -> Vec<Self>;
    /// The labels as written between the braces: `db="appdb",reason="created"`.
    fn labels(&self) -> String;
}

/// A counter with labels; the only way to export one is `series`, which includes every known series.
#[derive(Clone, Debug)]
pub struct LabelledCounter<S> {
    counts: BTreeMap<S, u64>,
}

impl<S> Default for LabelledCounter<S> {
    fn default() -> Self {
        LabelledCounter {
            counts: BTreeMap::new(),
        }
    }
}

impl<S: Series> LabelledCounter<S> {
    pub fn increment(&mut self, series: S) {
        self.add(series, 1);
    }

    pub fn add(&mut self, series: S, count: u64) {
        *self.counts.entry(series).or_default() += count;
    }

    /// Every series known for `databases`, at 0 until counted, and every series counted so far:
    /// one whose database left the spec keeps its count, as a counter never goes back.
    pub fn series(&self, databases: &[String]) -> BTreeMap<S, u64> {
        let mut all: BTreeMap<S, u64> = S::known(databases).into_iter().map(|s| (s, 0)).collect();
        all.extend(self.counts.iter().map(|(s, count)| (s.clone(), *count)));
        all
    }
}

/// A series of `immudb_agent_repairs_total`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Repaired {
    pub db: String,
    pub reason: Repair,
}

impl Series for Repaired {
    /// Each database with every reason the planner can give.
    fn known(databases: &[String]) -> Vec<Repaired> {
        let mut known = Vec::new();
        for db in databases {
            for &reason in Repair::VARIANTS {
                known.push(Repaired {
                    db: db.clone(),
                    reason,
                });
            }
        }
        known
    }

    fn labels(&self) -> String {
        format!("db=\"{}\",reason=\"{}\"", self.db, self.reason.name())
    }
}

/// A series labelled by database only: `immudb_agent_failover_lost_transactions_total`,
/// `immudb_agent_replicator_wakes_total`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OfDatabase {
    pub db: String,
}

impl Series for OfDatabase {
    fn known(databases: &[String]) -> Vec<OfDatabase> {
        databases
            .iter()
            .map(|db| OfDatabase { db: db.clone() })
            .collect()
    }

    fn labels(&self) -> String {
        format!("db=\"{}\"", self.db)
    }
}

/// How a hand-over of the primary role ended: a series of `immudb_agent_switchovers_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, strum::VariantArray)]
pub enum Switched {
    /// The Lease moved to a replica, which then served writes.
    HandedOver,
    /// It could not finish in time: this pod kept the Lease through its restart.
    KeptRole,
    /// Another pod handed the role to this one. Counted by the pod that lives on: the giver's
    /// own count ends with its process, often before a scrape reads it.
    Received,
}

impl Series for Switched {
    fn known(_databases: &[String]) -> Vec<Switched> {
        Switched::VARIANTS.to_vec()
    }

    fn labels(&self) -> String {
        let outcome = match self {
            Switched::HandedOver => "handed_over",
            Switched::KeptRole => "kept_role",
            Switched::Received => "received",
        };
        format!("outcome=\"{outcome}\"")
    }
}

/// Everything the agent counts across polls. A counter with labels is a `LabelledCounter`, so
/// each of its series is exported from the start.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// The databases the spec named at the last poll that read it.
    pub databases: Vec<String>,
    pub repairs: LabelledCounter<Repaired>,
    pub polls: u64,
    pub poll_errors: u64,
    pub logins: u64,
    /// Failovers this agent made: it took the Lease from another pod.
    pub failovers: u64,
    /// Hand-overs of the primary role before a planned stop, by outcome.
    pub switchovers: LabelledCounter<Switched>,
    /// Transactions those failovers lost (async), as last seen on the old primary.
    pub lost_transactions: LabelledCounter<OfDatabase>,
    /// Replicators woken from immudb's retry sleep, per database.
    pub wakes: LabelledCounter<OfDatabase>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(databases: &[&str]) -> Vec<String> {
        databases.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn every_database_and_reason_is_known_at_zero_and_a_count_outlives_its_database() {
        let mut repairs = LabelledCounter::<Repaired>::default();
        let both = repairs.series(&names(&["appdb", "audit"]));
        assert_eq!(both.len(), 2 * Repair::VARIANTS.len());
        assert!(both.values().all(|&count| count == 0));
        assert!(Repair::VARIANTS.contains(&Repair::ReplicatorRestarted));

        let restarted = Repaired {
            db: "audit".into(),
            reason: Repair::ReplicatorRestarted,
        };
        repairs.increment(restarted.clone());
        repairs.increment(restarted.clone());
        let appdb_only = repairs.series(&names(&["appdb"]));
        assert_eq!(appdb_only.len(), Repair::VARIANTS.len() + 1);
        assert_eq!(appdb_only[&restarted], 2);
        assert_eq!(appdb_only.values().sum::<u64>(), 2);
    }
}

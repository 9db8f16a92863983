//! Automatic failover's decisions, pure: what the Lease says (held, expired, free), what the
//! agent does about it (renew, follow, elect, fence), who wins an election, whether a returning
//! primary can follow the new one, and what a failover lost. The agent's loop (`agent::failover`)
//! reads the Lease and the peers and applies what these functions decide.
//!
//! `lease` reads the Lease and decides the step, `election` who takes a Lease nobody holds; this
//! file holds what follows a change of primary: the new primary's promotions, the others' fences,
//! and whether a fenced former primary may follow.

mod election;
mod lease;

pub use election::{
    elect, lost_transactions, quorum, Election, ElectionRules, Peer, Position, TxPosition,
};
pub use lease::{lease_step, observe, LeaseMemory, LeaseRecord, LeaseState, LeaseStep, Timing};

use super::{
    Action, Observed, ObservedDatabase, PrimaryDesired, ReplicaDesired, ReplicaOptions,
    ReplicationSettings, StorageSettings,
};

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

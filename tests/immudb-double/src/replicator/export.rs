//! The primary's side of a replicator's fetch (immudb's ExportTx for a replica): the
//! connection's checks (reachable, same version, the replication user's permission), then
//! committed transactions for an asynchronous replica, or, for a synchronous one, its state
//! checked against the primary's history, its acknowledgement counted and precommitted
//! transactions with how far it may commit.

use std::sync::Mutex;

use immudb_txlog::Hash;

use crate::options::Replication;
use crate::rules;
use crate::state::State;

/// Transactions a replica database fetches from its primary per round.
const REPLICATION_BATCH: u64 = 256;

/// What a replica database tells its primary with each fetch. immudb's replicator sends its
/// state only when the replica database replicates synchronously; it then receives precommitted
/// transactions and how far it may commit.
#[derive(Clone, Debug)]
pub(super) struct Report {
    /// Which replica this is (immudb: a per-replicator UUID).
    pub(super) uuid: String,
    pub(super) sync: bool,
    pub(super) committed: (u64, Hash),
    pub(super) precommitted: (u64, Hash),
}

/// One fetch for one replica database: what the primary has after the replica's position.
pub(super) enum Fetch {
    Transactions {
        messages: Vec<Vec<u8>>,
        users: Vec<(String, crate::state::User)>,
        /// Synchronous: the replica may commit up to here.
        may_commit: Option<u64>,
        /// Asynchronous: these were the last the primary had.
        drained: bool,
    },
    /// The replicator stops for good.
    VersionMismatch,
    /// The replica committed what the primary does not have: the replicator stops for good.
    CommitDiverged,
    /// The replica holds precommitted transactions the primary does not have: discarded with
    /// allowTxDiscarding, else the replicator stops for good.
    PrecommitDiverged,
    Failed(String),
}

/// immudb's answer to a synchronous replica's fetch from a database that keeps no replica
/// states (immudb 1.11.1 pkg/database/database.go, `(*db).ExportTxByID`).
pub const REPLICA_STATE_NOT_EXPECTED: &str = "illegal state: replica state was NOT expected";

pub(super) const COMMIT_DIVERGED: &str = "replica commit state diverged from primary's";

pub(super) const PRECOMMIT_DIVERGED: &str = "replica precommit state diverged from primary's";

/// The primary's checks of a synchronous replica's state (immudb's ExportTx with a replica
/// state): ids beyond its own, or an Alh that differs at the replica's id, mean divergence.
fn check_report(source: &crate::ledger::Ledger, report: &Report) -> Option<Fetch> {
    let (committed, committed_alh) = report.committed;
    if committed > source.tx_count() || source.alh(committed) != committed_alh {
        return Some(Fetch::CommitDiverged);
    }
    let (precommitted, precommitted_alh) = report.precommitted;
    if precommitted > source.precommitted_id() || source.alh(precommitted) != precommitted_alh {
        return Some(Fetch::PrecommitDiverged);
    }
    None
}

/// One fetch from `primary` (`connect`: a new connection, opened first: immudb 1.11.1
/// pkg/replication/replicator.go, `connect`: OpenSession, then ServerInfo).
pub(super) fn fetch(
    primary: &Mutex<State>,
    version: &str,
    settings: &Replication,
    report: &Report,
    connect: bool,
) -> Fetch {
    let mut primary = primary.lock().expect("double state lock");
    if primary.isolated || primary.refuse_replication {
        return Fetch::Failed("connection refused".into());
    }
    if connect {
        primary.logins += 1;
    }
    if primary.version != version {
        return Fetch::VersionMismatch;
    }
    let allowed = primary
        .users
        .get(&settings.primary_username)
        .is_some_and(|u| {
            u.active
                && u.password == settings.primary_password
                && (u.sys_admin
                    || u.permissions.get(&settings.primary_database)
                        == Some(&rules::PERMISSION_ADMIN))
        });
    if !allowed {
        return Fetch::Failed("rpc error: code = Internal desc = permission denied".into());
    }
    let users = primary
        .users
        .iter()
        .map(|(name, user)| (name.clone(), user.clone()))
        .collect();
    let Some(source) = primary.databases.get_mut(&settings.primary_database) else {
        return Fetch::Failed("database does not exist".into());
    };
    if !report.sync {
        let have = report.committed.0;
        let last = source.tx_count().min(have + REPLICATION_BATCH);
        let messages = (have + 1..=last)
            .filter_map(|id| source.ledger.transaction(id).map(|t| t.to_message()))
            .collect();
        return Fetch::Transactions {
            messages,
            users,
            may_commit: None,
            drained: last == source.tx_count(),
        };
    }
    // immudb keeps replica states only on a writable database with sync acks (immudb 1.11.1
    // pkg/database/database.go, `(*db).AsReplica`) and refuses a fetch that carries one
    // otherwise (`(*db).ExportTxByID`), before it looks at the state: a synchronous replica
    // cannot fetch from a primary that was fenced (made a replica).
    if !source.replication.sync_replication || source.replication.replica {
        return Fetch::Failed(REPLICA_STATE_NOT_EXPECTED.into());
    }
    if let Some(diverged) = check_report(&source.ledger, report) {
        return diverged;
    }
    let have = report.precommitted.0;
    source.acks.insert(report.uuid.clone(), have);
    source.acknowledged();
    let last = source
        .ledger
        .precommitted_id()
        .min(have + REPLICATION_BATCH);
    let messages = (have + 1..=last)
        .filter_map(|id| source.ledger.stored(id).map(|t| t.to_message()))
        .collect();
    Fetch::Transactions {
        messages,
        users,
        may_commit: Some(source.tx_count()),
        drained: false,
    }
}

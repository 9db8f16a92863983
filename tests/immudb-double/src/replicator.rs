//! immudb's per-database replicator as observed on a real server (`shared/immudb-facts.md`):
//! it starts when a replica database with a primary host is created or loaded, and restarts when
//! its replication settings are updated; it stops on unload, and for good when the primary runs
//! another version, until the database is loaded again. While it runs, the
//! `immudb_replication_replicators` gauge equals its commit concurrency; stopped, 0. A commit
//! concurrency above the database's maxConcurrency is accepted and then fails every replicated
//! transaction. With nothing new on the primary it backs off (immudb: 1 s doubling to 2 min; here
//! from `NodeOptions::replication_interval` to `replication_idle_max`).
//!
//! A synchronous replica (pkg/replication/replicator.go) sends its committed and precommitted
//! positions with each fetch; the primary counts its precommitted position as an acknowledgement,
//! sends precommitted transactions and how far the replica may commit, and refuses a replica that
//! is ahead of it or whose Alh differs at its position: committed divergence stops the replicator
//! for good; precommitted divergence is discarded (back to the committed position) when the
//! database allows tx discarding, and stops it otherwise. An asynchronous replica fetches
//! committed transactions only, and one whose history split from the primary's fails every
//! replicated transaction (`invalid blRoot`) while its replicator keeps running.

use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use immudb_txlog::Hash;

use crate::options::Replication;
use crate::rules;
use crate::state::{Database, State};
use crate::Network;

/// Transactions a replica database fetches from its primary per round.
const REPLICATION_BATCH: u64 = 256;

#[derive(Clone, Debug, Default)]
pub struct Replicator {
    /// Started and not stopped.
    pub running: bool,
    /// The commit concurrency it was started with: the gauge while it runs.
    pub concurrency: u32,
    /// Why the last fetch made no progress, as immudb would log it.
    pub last_error: Option<String>,
    idle_backoff: Duration,
    next_attempt: Option<Instant>,
}

impl Database {
    /// immudb runs a replicator for a loaded replica database that names its primary.
    pub fn replicator_required(&self) -> bool {
        let r = &self.replication;
        self.loaded && r.replica && !r.primary_host.is_empty() && r.primary_port > 0
    }

    /// (Re)starts the replicator when the database needs one, with fresh backoff.
    pub fn start_replicator(&mut self) {
        self.replicator = Replicator {
            running: self.replicator_required(),
            concurrency: self.replication.replication_commit_concurrency,
            ..Default::default()
        };
    }

    pub fn stop_replicator(&mut self) {
        self.replicator.running = false;
    }
}

/// What a replica database tells its primary with each fetch. immudb's replicator sends its
/// state only when the replica database replicates synchronously; it then receives precommitted
/// transactions and how far it may commit.
#[derive(Clone, Debug)]
struct Report {
    /// Which replica this is (immudb: a per-replicator UUID).
    uuid: String,
    sync: bool,
    committed: (u64, Hash),
    precommitted: (u64, Hash),
}

/// One fetch for one replica database: what the primary has after the replica's position.
enum Fetch {
    Transactions {
        messages: Vec<Vec<u8>>,
        users: Vec<(String, crate::state::User)>,
        /// Synchronous: the replica may commit up to here.
        may_commit: Option<u64>,
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

const COMMIT_DIVERGED: &str = "replica commit state diverged from primary's";
const PRECOMMIT_DIVERGED: &str = "replica precommit state diverged from primary's";

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

fn fetch(network: &Network, version: &str, settings: &Replication, report: &Report) -> Fetch {
    let Some(primary) = network.find(&settings.primary_host, settings.primary_port) else {
        return Fetch::Failed("connection refused".into());
    };
    let mut primary = primary.lock().expect("double state lock");
    if primary.refuse_replication {
        return Fetch::Failed("connection refused".into());
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
        };
    }
    if let Some(diverged) = check_report(&source.ledger, report) {
        return diverged;
    }
    if !source.replication.sync_replication || source.replication.replica {
        return Fetch::Failed("primary is not running with synchronous replication".into());
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
    }
}

/// One round over every running replicator of `state` (the node `me` on the network).
fn round(state: &Mutex<State>, me: &str, network: &Network, base: Duration, idle_max: Duration) {
    let now = Instant::now();
    let (version, due): (String, Vec<(String, Replication, Report)>) = {
        let state = state.lock().expect("double state lock");
        if state.isolated {
            return;
        }
        let due = state
            .databases
            .iter()
            .filter(|(_, db)| db.replicator.running)
            .filter(|(_, db)| db.replicator.next_attempt.is_none_or(|at| at <= now))
            .map(|(name, db)| {
                let report = Report {
                    uuid: format!("{me}/{name}"),
                    sync: db.replication.sync_replication,
                    committed: db.ledger.state(),
                    precommitted: db.ledger.precommitted_state(),
                };
                (name.clone(), db.replication.clone(), report)
            })
            .collect();
        (state.version.clone(), due)
    };
    for (name, settings, report) in due {
        let fetched = fetch(network, &version, &settings, &report);
        let mut state = state.lock().expect("double state lock");
        let server_replica = state.server_replica;
        let Some(db) = state.databases.get_mut(&name) else {
            continue;
        };
        let replicator = &mut db.replicator;
        let (messages, users, may_commit) = match fetched {
            Fetch::VersionMismatch => {
                // Stops without a log line naming the cause; only a load restarts it.
                replicator.running = false;
                continue;
            }
            Fetch::CommitDiverged => {
                replicator.running = false;
                replicator.last_error = Some(COMMIT_DIVERGED.into());
                continue;
            }
            Fetch::PrecommitDiverged if settings.allow_tx_discarding => {
                let discarded = db.ledger.discard_after(report.committed.0);
                db.replicator.last_error = Some(format!(
                    "{PRECOMMIT_DIVERGED}: discarded {discarded} precommitted transactions after {}",
                    report.committed.0
                ));
                continue;
            }
            Fetch::PrecommitDiverged => {
                replicator.running = false;
                replicator.last_error = Some(PRECOMMIT_DIVERGED.into());
                continue;
            }
            Fetch::Failed(reason) => {
                replicator.last_error = Some(reason);
                replicator.next_attempt = Some(now + base);
                continue;
            }
            Fetch::Transactions {
                messages,
                users,
                may_commit,
            } => (messages, users, may_commit),
        };
        if !messages.is_empty() && replicator.concurrency > db.effective.max_concurrency {
            replicator.last_error = Some("max concurrency limit exceeded".into());
            replicator.next_attempt = Some(now + base);
            continue;
        }
        let committed = db.ledger.tx_count();
        let replicator = &mut db.replicator;
        if messages.is_empty() && may_commit.is_none_or(|up_to| up_to <= committed) {
            // "no new transactions": the idle backoff doubles up to its cap.
            let backoff = (replicator.idle_backoff * 2).clamp(base, idle_max);
            replicator.idle_backoff = backoff;
            replicator.next_attempt = Some(now + backoff);
        } else {
            replicator.idle_backoff = Duration::ZERO;
            replicator.next_attempt = None;
            replicator.last_error = None;
        }
        for message in messages {
            let applied = immudb_txlog::ExportedTx::from_message(&message)
                .ok()
                .and_then(|tx| db.ledger.replicate(tx).ok());
            if applied.is_none() {
                db.replicator.last_error =
                    Some("attempt to commit a tx with invalid blRoot".into());
                break;
            }
        }
        if let Some(up_to) = may_commit {
            db.ledger.allow_commit_up_to(up_to);
        }
        if server_replica {
            // systemdb replication carries users and their passwords too.
            state.users = users.into_iter().collect();
        }
    }
}

/// Runs every replicator of one node until the node stops.
pub(crate) async fn run(
    state: Arc<Mutex<State>>,
    me: String,
    network: Network,
    base: Duration,
    idle_max: Duration,
) {
    loop {
        tokio::time::sleep(base).await;
        round(&state, &me, &network, base, idle_max);
    }
}

/// The replication and commit gauges of port 9497's `/metrics`, in Prometheus text format.
pub(crate) fn metrics(state: &State) -> String {
    let mut text = String::from(
        "# TYPE immudb_replication_replicators gauge\n\
         # TYPE immudb_last_committed_trx_id gauge\n",
    );
    for (name, db) in &state.databases {
        if db.replication.replica && !db.replication.primary_host.is_empty() {
            let running = if db.replicator.running {
                db.replicator.concurrency
            } else {
                0
            };
            let _ = writeln!(
                text,
                "immudb_replication_replicators{{db=\"{name}\"}} {running}"
            );
        }
        if db.loaded {
            let _ = writeln!(
                text,
                "immudb_last_committed_trx_id{{db=\"{name}\",index=\"index_00\"}} {}",
                db.tx_count()
            );
        }
    }
    text
}

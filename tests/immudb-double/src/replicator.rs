//! immudb's per-database replicator as observed on a real server (`shared/immudb-facts.md`):
//! it starts when a replica database with a primary host is created or loaded, and restarts when
//! its replication settings are updated; it stops on unload, and for good when the primary runs
//! another version, until the database is loaded again. While it runs, the
//! `immudb_replication_replicators` gauge equals its commit concurrency; stopped, 0. A commit
//! concurrency above the database's maxConcurrency is accepted and then fails every replicated
//! transaction. With nothing new on the primary it backs off (immudb: 1 s doubling to 2 min; here
//! from `NodeOptions::replication_interval` to `replication_idle_max`).

use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::rules::{self, Replication};
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

/// One fetch for one replica database: what the primary has after `have`, or why not.
enum Fetch {
    Transactions(Vec<Vec<u8>>, Vec<(String, crate::state::User)>),
    /// The replicator stops for good.
    VersionMismatch,
    Failed(String),
}

fn fetch(network: &Network, version: &str, settings: &Replication, have: u64) -> Fetch {
    let Some(primary) = network.find(&settings.primary_host, settings.primary_port) else {
        return Fetch::Failed("connection refused".into());
    };
    let primary = primary.lock().expect("double state lock");
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
    let Some(source) = primary.databases.get(&settings.primary_database) else {
        return Fetch::Failed("database does not exist".into());
    };
    let last = source.tx_count().min(have + REPLICATION_BATCH);
    let messages = (have + 1..=last)
        .filter_map(|id| source.ledger.transaction(id).map(|t| t.to_message()))
        .collect();
    let users = primary
        .users
        .iter()
        .map(|(name, user)| (name.clone(), user.clone()))
        .collect();
    Fetch::Transactions(messages, users)
}

/// One round over every running replicator of `state`.
fn round(state: &Mutex<State>, network: &Network, base: Duration, idle_max: Duration) {
    let now = Instant::now();
    let (version, due): (String, Vec<(String, Replication, u64)>) = {
        let state = state.lock().expect("double state lock");
        let due = state
            .databases
            .iter()
            .filter(|(_, db)| db.replicator.running)
            .filter(|(_, db)| db.replicator.next_attempt.is_none_or(|at| at <= now))
            .map(|(name, db)| (name.clone(), db.replication.clone(), db.tx_count()))
            .collect();
        (state.version.clone(), due)
    };
    for (name, settings, have) in due {
        let fetched = fetch(network, &version, &settings, have);
        let mut state = state.lock().expect("double state lock");
        let server_replica = state.server_replica;
        let Some(db) = state.databases.get_mut(&name) else {
            continue;
        };
        let replicator = &mut db.replicator;
        let (messages, users) = match fetched {
            Fetch::VersionMismatch => {
                // Stops without a log line naming the cause; only a load restarts it.
                replicator.running = false;
                continue;
            }
            Fetch::Failed(reason) => {
                replicator.last_error = Some(reason);
                replicator.next_attempt = Some(now + base);
                continue;
            }
            Fetch::Transactions(messages, users) => (messages, users),
        };
        if !messages.is_empty() && replicator.concurrency > db.effective.max_concurrency {
            replicator.last_error = Some("max concurrency limit exceeded".into());
            replicator.next_attempt = Some(now + base);
            continue;
        }
        if messages.is_empty() {
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
        if server_replica {
            // systemdb replication carries users and their passwords too.
            state.users = users.into_iter().collect();
        }
    }
}

/// Runs every replicator of one node until the node stops.
pub(crate) async fn run(
    state: Arc<Mutex<State>>,
    network: Network,
    base: Duration,
    idle_max: Duration,
) {
    loop {
        tokio::time::sleep(base).await;
        round(&state, &network, base, idle_max);
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

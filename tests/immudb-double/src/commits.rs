//! What a commit costs and how concurrent replicateTx calls are ordered, as immudb's store does it
//! (immudb 1.9-1.11 `embedded/store`, read for its rules only; `shared/immudb-facts.md`, "Write
//! latency" and "replicateTx ordering"):
//!
//! - A writer precommits (its transaction is in the log, in order) and then waits for the
//!   database's syncer. The syncer wakes on the first transaction precommitted since the last
//!   sync, sleeps a quarter of `syncFrequency`, and sleeps again (four quarters at most) while
//!   more transactions keep arriving; then one fsync makes every transaction precommitted by then
//!   durable, and all their writers return together. One writer waits about a quarter of
//!   syncFrequency plus the fsync (immudb 1.10: 8.3 ms at 20 ms, 5.2 ms at 5 ms).
//! - replicateTx takes one of `maxConcurrency` transaction slots while it precommits (none free:
//!   `max concurrency limit exceeded`), may run at most maxConcurrency transactions ahead of the
//!   last precommitted one (`max active transactions limit exceeded`; `shared/immudb-facts.md`,
//!   observed on 1.11.1; the store's source names maxActiveTransactions, 1000 by default, for
//!   this bound: the double applies the smaller), and waits for its predecessor to precommit:
//!   concurrent calls commit in order, batched by the syncer. At most maxActiveTransactions may
//!   wait for a sync.

use std::pin::pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::rules::unknown;
use crate::state::{Database, State, CLOSED};

/// immudb's default maxActiveTransactions (a database setting the double does not make
/// configurable).
pub const MAX_ACTIVE_TRANSACTIONS: u64 = 1000;
pub const MAX_CONCURRENCY_EXCEEDED: &str = "max concurrency limit exceeded";
pub const MAX_ACTIVE_EXCEEDED: &str = "max active transactions limit exceeded";

/// One database's commit machinery: who waits, the transaction slots in use, the syncer.
#[derive(Clone, Debug, Default)]
pub struct Commits {
    /// Woken whenever a transaction precommits or commits, or the database closes.
    changed: Arc<Notify>,
    /// replicateTx calls holding a transaction slot.
    slots_taken: u32,
    /// replicateTx calls between their arrival and their answer, and the most there ever were.
    calls: u32,
    most_calls: u32,
    /// Syncs done: each made a batch of precommitted transactions durable.
    syncs: u64,
    syncer: Option<Arc<Syncer>>,
}

/// The running syncer task; dropping the database stops it.
#[derive(Debug)]
struct Syncer(AbortHandle);

impl Drop for Syncer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the syncer needs to know about its node.
#[derive(Clone, Debug)]
pub struct SyncCost {
    /// One fsync of the logs.
    pub fsync: Duration,
}

impl Commits {
    /// A transaction of `db` was precommitted: wake waiters, and the syncer, starting it with the
    /// syncFrequency the database runs with.
    pub(crate) fn precommitted(
        db: &mut Database,
        state: &Arc<Mutex<State>>,
        name: &str,
        cost: &SyncCost,
    ) {
        if db.commits.syncer.is_none() {
            let frequency = Duration::from_millis(db.effective.sync_frequency_ms.max(0) as u64);
            let task = tokio::spawn(sync_loop(
                Arc::downgrade(state),
                name.to_string(),
                db.commits.changed.clone(),
                frequency,
                cost.fsync,
            ));
            db.commits.syncer = Some(Arc::new(Syncer(task.abort_handle())));
        }
        db.commits.changed.notify_waiters();
    }

    /// The database closed (unloaded) or its settings are reloaded: the syncer stops, waiters
    /// look again, and the next commit starts a syncer with the settings in effect.
    pub(crate) fn restart(&mut self) {
        self.syncer = None;
        self.changed.notify_waiters();
    }

    /// Something a waiter waits for may have changed (the commit allowance moved).
    pub(crate) fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// Takes a transaction slot for one replicateTx, or refuses as immudb does when all
    /// maxConcurrency are taken.
    pub(crate) fn take_slot(db: &mut Database) -> Result<(), tonic::Status> {
        if db.commits.slots_taken >= db.effective.max_concurrency {
            return Err(unknown(MAX_CONCURRENCY_EXCEEDED));
        }
        db.commits.slots_taken += 1;
        Ok(())
    }

    pub fn slots_taken(&self) -> u32 {
        self.slots_taken
    }

    /// The most replicateTx calls this database ever had in flight at once.
    pub fn most_calls_in_flight(&self) -> u32 {
        self.most_calls
    }

    /// Counts a replicateTx call until the returned guard is dropped (never under the lock).
    pub(crate) fn call_started(
        db: &mut Database,
        state: &Arc<Mutex<State>>,
        name: &str,
    ) -> CallInFlight {
        db.commits.calls += 1;
        db.commits.most_calls = db.commits.most_calls.max(db.commits.calls);
        CallInFlight {
            state: Arc::downgrade(state),
            database: name.to_string(),
        }
    }

    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    fn release_slot(&mut self) {
        self.slots_taken = self.slots_taken.saturating_sub(1);
    }
}

/// A replicateTx's transaction slot, given back when the call precommits, fails or is dropped.
pub(crate) struct Slot {
    pub state: Weak<Mutex<State>>,
    pub database: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade() {
            let mut state = state.lock().expect("double state lock");
            if let Some(db) = state.databases.get_mut(&self.database) {
                db.commits.release_slot();
            }
        }
    }
}

/// A replicateTx call in flight, counted until it is dropped.
pub(crate) struct CallInFlight {
    state: Weak<Mutex<State>>,
    database: String,
}

impl Drop for CallInFlight {
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade() {
            let mut state = state.lock().expect("double state lock");
            if let Some(db) = state.databases.get_mut(&self.database) {
                db.commits.calls = db.commits.calls.saturating_sub(1);
            }
        }
    }
}

/// Waits until `ready` gives a value for loaded database `name`, for a call: an unloaded or
/// missing database ends the wait with immudb's "already closed", a stopped node with
/// Unavailable (its process's connections end).
pub(crate) async fn wait_until<T>(
    state: &Weak<Mutex<State>>,
    name: &str,
    ready: impl FnMut(&Database) -> Option<T>,
) -> Result<T, tonic::Status> {
    wait_for(state, name, ready, true).await
}

/// [`wait_until`]; `calls` false for the syncer, which outlives a stop of its node (the node
/// returns with its volume and syncs again).
async fn wait_for<T>(
    state: &Weak<Mutex<State>>,
    name: &str,
    mut ready: impl FnMut(&Database) -> Option<T>,
    calls: bool,
) -> Result<T, tonic::Status> {
    let closed = || unknown(CLOSED);
    let stopped = || tonic::Status::unavailable("the server is stopped");
    loop {
        let changed = {
            let state = state.upgrade().ok_or_else(closed)?;
            let state = state.lock().expect("double state lock");
            if calls && state.isolated {
                return Err(stopped());
            }
            let db = state.databases.get(name).filter(|db| db.loaded);
            let db = db.ok_or_else(closed)?;
            if let Some(value) = ready(db) {
                return Ok(value);
            }
            db.commits.changed.clone()
        };
        let mut notified = pin!(changed.notified());
        notified.as_mut().enable();
        // Look again now that a notification cannot be missed.
        {
            let state = state.upgrade().ok_or_else(closed)?;
            let state = state.lock().expect("double state lock");
            if calls && state.isolated {
                return Err(stopped());
            }
            let db = state.databases.get(name).filter(|db| db.loaded);
            if let Some(value) = ready(db.ok_or_else(closed)?) {
                return Ok(value);
            }
        }
        notified.await;
    }
}

/// Waits until transaction `id` of `name` is committed.
pub(crate) async fn committed(
    state: &Weak<Mutex<State>>,
    name: &str,
    id: u64,
) -> Result<(), tonic::Status> {
    wait_until(state, name, |db| (db.ledger.tx_count() >= id).then_some(())).await
}

/// What replicateTx waits for before it answers (immudb 1.11.1 embedded/store/immustore.go,
/// `(*ImmuStore).ReplicateTx`): its transaction durable, and committed too unless the database
/// commits on an external allowance (synchronous replication), which only its primary gives, or
/// a promotion: a synchronous replica answers once the transaction is precommitted and synced.
pub(crate) async fn replicated(
    state: &Weak<Mutex<State>>,
    name: &str,
    id: u64,
) -> Result<(), tonic::Status> {
    wait_until(state, name, |db| {
        let ledger = &db.ledger;
        let done = if ledger.uses_allowance() {
            ledger.durable_id() >= id
        } else {
            ledger.tx_count() >= id
        };
        done.then_some(())
    })
    .await
}

/// The syncer of one database: batches every precommitted transaction into one fsync.
async fn sync_loop(
    state: Weak<Mutex<State>>,
    name: String,
    changed: Arc<Notify>,
    frequency: Duration,
    fsync: Duration,
) {
    let precommitted = |state: &Weak<Mutex<State>>| -> Option<u64> {
        let state = state.upgrade()?;
        let state = state.lock().expect("double state lock");
        Some(state.databases.get(&name)?.ledger.precommitted_id())
    };
    loop {
        let pending = wait_for(
            &state,
            &name,
            |db| {
                let durable = db.ledger.durable_id();
                (db.ledger.precommitted_id() > durable).then_some(durable)
            },
            false,
        )
        .await;
        let Ok(durable) = pending else { return };
        // Give more transactions time to precommit while they keep coming.
        let mut seen = durable + 1;
        for _ in 0..4 {
            tokio::time::sleep(frequency / 4).await;
            let Some(latest) = precommitted(&state) else {
                return;
            };
            if latest == seen {
                break;
            }
            seen = latest;
        }
        let Some(up_to) = precommitted(&state) else {
            return;
        };
        tokio::time::sleep(fsync).await;
        let Some(state_now) = state.upgrade() else {
            return;
        };
        let mut guard = state_now.lock().expect("double state lock");
        let Some(db) = guard.databases.get_mut(&name) else {
            return;
        };
        db.ledger.sync_up_to(up_to);
        db.commits.syncs += 1;
        changed.notify_waiters();
    }
}

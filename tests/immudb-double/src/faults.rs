//! Fault injection shared by every call of one node: latency, refusals, failures in the middle
//! of a stream, sessions reaped, and a process paused or stopped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tonic::Status;

/// Fault injection and timing shared by every call of one node.
#[derive(Debug, Default)]
pub struct Faults {
    pub latency: Duration,
    /// The first this many calls answer Unavailable, like a server that is still starting.
    pub unavailable_first: AtomicUsize,
    /// When set, exportTx serves this many more transactions, then fails every call with
    /// Internal (a source that dies in the middle of a backup).
    pub failing_exports_after: Mutex<Option<usize>>,
    /// The same for replicateTx (a target that fails in the middle of a restore).
    pub failing_replicates_after: Mutex<Option<usize>>,
    /// When set, every this many calls the server forgets every session, as immudb does when it
    /// reaps them or restarts; sessions then answer 7 `session not found`.
    pub reap_sessions_every: Mutex<Option<usize>>,
    /// Calls counted for `reap_sessions_every`, and sessions forgotten so far.
    pub calls: AtomicUsize,
    pub sessions_reaped: AtomicUsize,
    /// Set when the node is dropped: connections still open answer as a dead process would.
    pub stopped: AtomicBool,
    /// Set while the process is stopped (`Node::pause`).
    pub pause: Pause,
    /// UpdateDatabaseV2 accepts storage settings but keeps the old ones, as immudb does with a
    /// field it does not know (a client sending a wrong field number).
    pub storage_updates_ignored: AtomicBool,
    /// Calls refused by name (`"DatabaseListV2"`, as the proto spells it) with the status given:
    /// a server that answers, and refuses (`Faults::refuse`).
    pub refused: Mutex<BTreeMap<&'static str, Status>>,
}

/// A process that stops for a while and resumes (SIGSTOP, a long GC pause, a frozen VM): its
/// kernel keeps its connections open and accepts new ones, but nothing answers, so every call
/// waits, neither failing nor timing out on the server's side, until it resumes.
#[derive(Debug, Default)]
pub struct Pause {
    paused: AtomicBool,
    resumed: Notify,
}

impl Pause {
    pub(crate) fn set(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        if !paused {
            self.resumed.notify_waiters();
        }
    }

    /// Returns at once while running, else when the process resumes.
    pub(crate) async fn wait(&self) {
        loop {
            // Registered before the check: a resume between the two still wakes it.
            let resumed = self.resumed.notified();
            if !self.paused.load(Ordering::SeqCst) {
                return;
            }
            resumed.await;
        }
    }
}

impl Faults {
    /// Every later `rpc` call answers `status`; `None` accepts it again.
    pub fn refuse(&self, rpc: &'static str, status: Option<Status>) {
        let mut refused = self.refused.lock().expect("faults lock");
        match status {
            Some(status) => refused.insert(rpc, status),
            None => refused.remove(rpc),
        };
    }
}

//! What the agent keeps across polls about its pod being stopped and the primary's hand-over
//! (`stop`, `survey`, `switchover` act on it): the preStop hooks waiting for an answer, why the
//! pod no longer serves, and the sessions a hand-over holds on the other pods.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::Topology;
use crate::link::Link;
use crate::session::Logins;

/// The stop of this pod, once asked.
#[derive(Default)]
pub struct Stop {
    /// When the first preStop came.
    pub since: Option<Instant>,
    /// Hooks of a primary waiting for the hand-over to end.
    pub waiting: Vec<oneshot::Sender<String>>,
    /// How it ended, for a hook that comes again.
    pub answer: Option<String>,
    /// Why the pod is not Ready while it stops; None while it keeps serving.
    pub reason: Option<String>,
    /// After the answer, a poll found the local immudb down: it stopped.
    pub went_down: bool,
}

impl Stop {
    /// A primary's hook waits for the hand-over.
    pub fn pending(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// How long the pod has been stopping.
    pub fn waited(&self) -> Duration {
        self.since.map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// The hand-over ended: every waiting hook gets `answer`.
    pub fn answer(&mut self, answer: &str) {
        for hook in self.waiting.drain(..) {
            let _ = hook.send(answer.to_string());
        }
        self.answer = Some(answer.to_string());
    }
}

/// The hand-over's state across polls.
#[derive(Default)]
pub struct Handover {
    /// The admin's sessions on the other pods while a hand-over runs.
    pub peers: Peers,
    /// What the stopping primary last waited for, logged again only when it changes.
    pub waiting_for: Option<String>,
    /// No hand-over for a rollout before this (one failed).
    pub not_before: Option<tokio::time::Instant>,
}

/// The admin's sessions on the other pods during a hand-over: opened on first use, closed
/// when it ends.
#[derive(Default)]
pub struct Peers {
    links: BTreeMap<String, Link>,
}

impl Peers {
    pub fn link(&mut self, host: &str, topology: &Topology, logins: &Logins) -> &mut Link {
        self.links
            .entry(host.to_string())
            .or_insert_with(|| Link::resolving(host, topology, logins))
    }

    pub async fn close(&mut self) {
        for link in self.links.values_mut() {
            link.close().await;
        }
        self.links.clear();
    }
}

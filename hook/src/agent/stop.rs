//! A pod being stopped. The kubelet runs the immudb container's preStop hook, a GET /prestop on
//! the agent's port, and sends immudb its SIGTERM only once the hook has answered (within
//! terminationGracePeriodSeconds). The agent is a native sidecar, which the kubelet stops only
//! after immudb has exited, so it acts while immudb still serves: a replica reports not Ready at
//! once and answers after `--drain`, so that readers' next connections go to the other replicas
//! before immudb stops (a terminating pod's endpoint is taken out at once; proxies follow within
//! about a second). The primary, with failover, first hands its role over (`switchover`) and
//! answers when that is done or abandoned; without failover there is nobody to hand over to,
//! and it answers at once and serves until immudb stops.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::metrics::Status;
use super::poll::Agent;
use super::stopping::Stop;
use crate::types::Role;

/// What the HTTP port asks of the agent's loop.
pub enum Request {
    /// The preStop hook: the answer goes back once the pod may stop.
    Stop(oneshot::Sender<String>),
    /// Poll now: another agent handed this pod the Lease (it still decides from the Lease).
    PollNow,
}

/// A replica's drain: not Ready now, the hook's answer after `drain`.
fn drain(hook: oneshot::Sender<String>, drain: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(drain).await;
        let _ = hook.send(format!(
            "drained for {} ms: the pod may stop",
            drain.as_millis()
        ));
    });
}

impl Agent {
    /// Handles one request of the HTTP port; true when the loop should poll now.
    pub fn request(&mut self, request: Request, status: &mut Status) -> bool {
        let hook = match request {
            Request::PollNow => return true,
            Request::Stop(hook) => hook,
        };
        self.stop.since.get_or_insert_with(Instant::now);
        if let Some(answer) = &self.stop.answer {
            let _ = hook.send(answer.clone());
            return false;
        }
        match (self.role, self.failover.is_some()) {
            (Role::Primary, true) => {
                tracing::info!("the pod is stopping: handing the primary role over first");
                self.stop.waiting.push(hook);
                true
            }
            (Role::Primary, false) => {
                tracing::info!("the pod is stopping; without failover the primary keeps its role through the restart");
                let _ = hook.send("no failover: the primary serves until immudb stops".into());
                false
            }
            (Role::Replica, _) => {
                self.start_draining(status, hook);
                false
            }
        }
    }

    /// Not Ready from now on; the hook answers after the drain.
    fn start_draining(&mut self, status: &mut Status, hook: oneshot::Sender<String>) {
        tracing::info!(
            drain_ms = self.config.drain.as_millis() as u64,
            "the pod is stopping: not Ready from now on, immudb stops after the drain"
        );
        let reason = "stopping: the pod is being stopped; readers go to the other replicas";
        self.stop.reason = Some(reason.to_string());
        status.stopping = self.stop.reason.clone();
        drain(hook, self.config.drain);
    }

    /// After a poll: a primary's hook that still waits although the pod no longer holds the
    /// Lease (it lost it meanwhile) drains like a replica's. Once immudb stopped and answers
    /// again, the kubelet restarted the container in a pod that stays (a failed liveness probe
    /// runs the preStop too): the stop is over.
    pub(super) fn settle_stop(&mut self, status: &mut Status) {
        if self.stop.answer.is_some() || self.stop.reason.is_some() {
            if !self.local_answered() {
                self.stop.went_down = true;
            } else if self.stop.went_down {
                tracing::info!("immudb restarted in the same pod: the stop is over");
                self.stop = Stop::default();
            }
        }
        if self.role == Role::Replica {
            let hooks: Vec<_> = self.stop.waiting.drain(..).collect();
            for hook in hooks {
                self.start_draining(status, hook);
            }
        }
        status.stopping = self.stop.reason.clone();
    }
}

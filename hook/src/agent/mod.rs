//! `agent`: runs beside immudb in every pod (a native sidecar) for as long as the pod lives. Each
//! poll it observes its local server (and, on a replica, the primary), lets the pure planner
//! (`plan::health`) decide state, readiness and repairs, applies the repairs, and publishes the
//! result on its HTTP port: `/readyz` for the immudb container's readiness probe, `/metrics`.
//! It re-reads the spec file every poll, so a `helm upgrade` reaches it without a restart. When
//! the pod is stopped (the immudb container's preStop hook asks its HTTP port), a replica drains
//! and the primary hands its role over first (`stop`, `switchover`).
//! A subcommand: it may import the engine (config, client, link, wait, holdings, plan) and the
//! leaf types; only the command tree imports it.

mod assess;
pub mod config;
mod counters;
pub mod failover;
mod http;
pub mod metrics;
mod pace;
mod poll;
mod position;
mod roles;
mod stop;
mod stopping;
mod survey;
mod switchover;
mod watch;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use config::{AgentArgs, AgentConfig, AgentRole};
use pace::{Pace, Polled};

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A poll that another agent asks for comes no sooner than this after the last one.
const SOONEST_POLL: Duration = Duration::from_millis(100);

/// Serves the HTTP port and polls until the process is stopped. Fails only when the port cannot
/// be bound; every other problem is reported on `/readyz` and retried at the next poll.
pub async fn run(config: AgentConfig) -> anyhow::Result<std::convert::Infallible> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let (requests_to, mut requests) = mpsc::unbounded_channel();
    let mut pace = Pace::new(config.poll_interval);
    let mut agent = poll::Agent::new(config);
    let shared = http::Shared {
        status: agent.shown(),
        last_poll: Arc::new(Mutex::new(Instant::now())),
        stuck_after: (agent.config.poll_interval * 10).max(Duration::from_secs(60)),
        requests: requests_to,
    };
    // The port closes with the agent (a test restarts agents in one process).
    let _server = AbortOnDrop(tokio::spawn(http::serve(listener, shared.clone())));
    tracing::info!(role = ?agent.config.role, listen = %agent.config.listen, "agent started");
    loop {
        let started = Instant::now();
        let mut status = agent.poll().await;
        let polled = match &status.assessment {
            Some(_) => Polled::Assessed,
            None if agent.local_answered() => Polled::Refused,
            None => Polled::Unanswered,
        };
        agent.show(&status);
        *shared.last_poll.lock().expect("poll lock") = Instant::now();
        let mut next_poll = started + pace.after(polled);
        // A stopping primary waiting for the rollout looks again at every watch tick.
        let watch = agent.config.watch_interval;
        if agent.stop.pending() {
            next_poll = next_poll.min(started + watch);
        }
        // Between polls, a replica's agent watches: lag each tick, and wakes.
        let mut next_tick = started + watch;
        loop {
            let wake = next_tick.min(next_poll);
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {
                    if wake >= next_poll {
                        break;
                    }
                    if agent.tick(&mut status).await {
                        agent.show(&status);
                    }
                    next_tick = (next_tick + watch).max(Instant::now());
                }
                Some(request) = requests.recv() => {
                    if agent.request(request, &mut status) {
                        next_poll = (started + SOONEST_POLL).max(Instant::now());
                    }
                    agent.show(&status);
                }
            }
        }
    }
}

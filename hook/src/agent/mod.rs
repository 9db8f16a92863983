//! `agent`: runs beside immudb in every pod (a native sidecar) for as long as the pod lives. Each
//! poll it observes its local server (and, on a replica, the primary), lets the pure planner
//! (`plan::health`) decide state, readiness and repairs, applies the repairs, and publishes the
//! result on its HTTP port: `/readyz` for the immudb container's readiness probe, `/metrics`.
//! It re-reads the spec file every poll, so a `helm upgrade` reaches it without a restart.
//! A subcommand: it may import the engine (config, client, link, wait, holdings, plan) and the
//! leaf types; only the command tree imports it.

pub mod config;
mod counters;
pub mod failover;
mod http;
pub mod metrics;
mod pace;
mod poll;
mod roles;
mod watch;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

pub use config::{AgentArgs, AgentConfig, AgentRole};
use pace::{Pace, Polled};

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the HTTP port and polls until the process is stopped. Fails only when the port cannot
/// be bound; every other problem is reported on `/readyz` and retried at the next poll.
pub async fn run(config: AgentConfig) -> anyhow::Result<std::convert::Infallible> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let shared = http::Shared {
        status: Arc::new(Mutex::new(metrics::Status::default())),
        last_poll: Arc::new(Mutex::new(Instant::now())),
        stuck_after: (config.poll_interval * 10).max(Duration::from_secs(60)),
    };
    // The port closes with the agent (a test restarts agents in one process).
    let _server = AbortOnDrop(tokio::spawn(http::serve(listener, shared.clone())));
    tracing::info!(role = ?config.role, listen = %config.listen, "agent started");
    let mut pace = Pace::new(config.poll_interval);
    let mut agent = poll::Agent::new(config);
    let publish = |status: &metrics::Status| {
        *shared.status.lock().expect("status lock") = status.clone();
    };
    loop {
        let started = Instant::now();
        let mut status = agent.poll().await;
        let polled = match &status.assessment {
            Some(_) => Polled::Assessed,
            None if agent.local_answered() => Polled::Refused,
            None => Polled::Unanswered,
        };
        publish(&status);
        *shared.last_poll.lock().expect("poll lock") = Instant::now();
        let next_poll = started + pace.after(polled);
        // Between polls, a replica's agent watches: lag each tick, and wakes.
        let watch = agent.config.watch_interval;
        let mut next_tick = started + watch;
        while next_tick < next_poll {
            tokio::time::sleep_until(next_tick.into()).await;
            if agent.tick(&mut status).await {
                publish(&status);
            }
            next_tick = (next_tick + watch).max(Instant::now());
        }
        tokio::time::sleep_until(next_poll.into()).await;
    }
}

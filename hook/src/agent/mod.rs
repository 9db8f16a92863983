//! `agent`: runs beside immudb in every pod (a native sidecar) for as long as the pod lives. Each
//! poll it observes its local server (and, on a replica, the primary), lets the pure planner
//! (`plan::health`) decide state, readiness and repairs, applies the repairs, and publishes the
//! result on its HTTP port: `/readyz` for the immudb container's readiness probe, `/metrics`.
//! It re-reads the spec file every poll, so a `helm upgrade` reaches it without a restart.

mod http;
pub mod metrics;
mod poll;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use tokio::net::TcpListener;

use crate::config::{
    read_password, reject, spec, ConfigError, Desired, Spec, Topology, TopologyArgs,
};
use crate::plan::health::Limits;
use crate::types::settings::parse_duration;
use crate::types::Credentials;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum AgentRole {
    Primary,
    Replica,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map(Duration::from_millis)
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The role of the pod the agent runs in.
    #[arg(long, env = "IMMUDB_AGENT_ROLE", value_enum)]
    pub role: AgentRole,
    /// The desired state (JSON), re-read every poll.
    #[arg(long, env = "IMMUDB_HOOK_SPEC_FILE")]
    pub spec_file: PathBuf,
    /// File holding the replication user's password.
    #[arg(long, env = "IMMUDB_HOOK_REPLICATION_PASSWORD_FILE")]
    pub replication_password_file: PathBuf,
    /// Address of the agent's HTTP port (/readyz, /livez, /metrics).
    #[arg(long, env = "IMMUDB_AGENT_LISTEN", default_value = "0.0.0.0:9498")]
    pub listen: SocketAddr,
    /// Where the local immudb listens (the pod's own loopback).
    #[arg(long, env = "IMMUDB_AGENT_LOCAL_ADDRESS", default_value = "127.0.0.1")]
    pub local_address: IpAddr,
    /// Time between polls.
    #[arg(long, env = "IMMUDB_AGENT_POLL_INTERVAL", default_value = "5s", value_parser = duration)]
    pub poll_interval: Duration,
    /// A replica is Ready only while it holds everything the primary had this long ago; above
    /// immudb's 2-minute idle backoff, so an idle async replica never flaps.
    #[arg(long, env = "IMMUDB_AGENT_MAX_LAG", default_value = "180s", value_parser = duration)]
    pub max_lag: Duration,
    /// Settings that differ from the spec this long are updated; longer than the kubelet takes to
    /// refresh a mounted ConfigMap, so a newer release's change is never undone.
    #[arg(long, env = "IMMUDB_AGENT_DRIFT_GRACE", default_value = "300s", value_parser = duration)]
    pub drift_grace: Duration,
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub role: AgentRole,
    pub topology: Topology,
    pub admin: Credentials,
    pub spec_file: PathBuf,
    pub replication_password_file: PathBuf,
    pub primary_host_for_replicas: String,
    pub listen: SocketAddr,
    pub local_address: IpAddr,
    pub poll_interval: Duration,
    pub limits: Limits,
}

impl AgentArgs {
    pub fn config(&self, topology_args: &TopologyArgs) -> Result<AgentConfig, ConfigError> {
        if self.poll_interval.is_zero() {
            return reject("--poll-interval", "0", "must be at least 1ms");
        }
        if self.max_lag <= self.poll_interval {
            return reject(
                "--max-lag",
                format!("{:?}", self.max_lag),
                "must be longer than --poll-interval: lag is measured once per poll",
            );
        }
        let config = AgentConfig {
            role: self.role,
            topology: topology_args.topology()?,
            admin: topology_args.admin()?,
            spec_file: self.spec_file.clone(),
            replication_password_file: self.replication_password_file.clone(),
            primary_host_for_replicas: topology_args.primary_host_for_replicas()?,
            listen: self.listen,
            local_address: self.local_address,
            poll_interval: self.poll_interval,
            limits: Limits {
                max_lag: self.max_lag,
                drift_grace: self.drift_grace,
                restart_backoff: (Duration::from_secs(10), Duration::from_secs(300)),
            },
        };
        // A bad spec or password file fails now, before the agent starts serving.
        config.desired()?;
        read_password(
            "--replication-password-file",
            &self.replication_password_file,
        )?;
        Ok(config)
    }
}

impl AgentConfig {
    /// The spec as the file says now.
    pub fn desired(&self) -> Result<Desired, ConfigError> {
        Spec::read(&self.spec_file)?.desired(spec::Context {
            replica_count: self.topology.replicas.len(),
            primary_host_for_replicas: self.primary_host_for_replicas.clone(),
            replication_password_file: Some(&self.replication_password_file),
        })
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
    tokio::spawn(http::serve(listener, shared.clone()));
    tracing::info!(role = ?config.role, listen = %config.listen, "agent started");
    let mut agent = poll::Agent::new(config);
    loop {
        let started = Instant::now();
        let status = agent.poll().await;
        *shared.status.lock().expect("status lock") = status;
        *shared.last_poll.lock().expect("poll lock") = Instant::now();
        let interval = agent.config.poll_interval;
        tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
    }
}

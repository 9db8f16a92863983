//! `agent`'s command line: its flags, validated with the shared ones into an [`AgentConfig`]
//! before the agent starts serving.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

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
            dials: true,
        })
    }
}

//! `converge`'s command line: its flags, validated with the shared ones into a [`Config`] before
//! any server is touched. `reconcile` runs it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::{spec, ConfigError, Desired, Spec, Topology, TopologyArgs};
use crate::types::Credentials;

#[derive(Args, Debug)]
pub struct ConvergeArgs {
    /// The desired state (JSON): databases, their settings, replication options.
    #[arg(long, env = "IMMUDB_HOOK_SPEC_FILE")]
    pub spec_file: PathBuf,
    /// File holding the replication user's password (database mode).
    #[arg(long, env = "IMMUDB_HOOK_REPLICATION_PASSWORD_FILE")]
    pub replication_password_file: Option<PathBuf>,
    /// After converging, wait until every replica holds the primary's transactions seen at start.
    #[arg(long, env = "IMMUDB_HOOK_WAIT_FOR_CATCH_UP")]
    pub wait_for_catch_up: bool,
    /// Validate the flags and the spec, print the desired state and exit; no server is touched.
    #[arg(long)]
    pub check: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub topology: Topology,
    pub admin: Credentials,
    pub timeout: Duration,
    pub desired: Desired,
    pub wait_for_catch_up: bool,
}

impl ConvergeArgs {
    pub fn config(&self, topology_args: &TopologyArgs) -> Result<Config, ConfigError> {
        let topology = topology_args.topology()?;
        let desired = Spec::read(&self.spec_file)?.desired(spec::Context {
            replica_count: topology.replicas.len(),
            primary_host_for_replicas: topology_args.primary_host_for_replicas()?,
            replication_password_file: self.replication_password_file.as_deref(),
        })?;
        Ok(Config {
            admin: topology_args.admin()?,
            timeout: topology_args.timeout()?,
            topology,
            desired,
            wait_for_catch_up: self.wait_for_catch_up,
        })
    }
}

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

/// What `--check` prints for the replicas' primary when neither host flag is given.
const PRIMARY_HOST_UNSET: &str = "<--primary-host>";

impl ConvergeArgs {
    fn desired(
        &self,
        replica_count: usize,
        primary_host_for_replicas: String,
        dials: bool,
    ) -> Result<Desired, ConfigError> {
        Spec::read(&self.spec_file)?.desired(spec::Context {
            replica_count,
            primary_host_for_replicas,
            replication_password_file: self.replication_password_file.as_deref(),
            dials,
        })
    }

    /// `--check`: the flags and the spec validated as far as they go without a server. It dials
    /// nothing, so it needs neither --primary-host nor a password file; those given are checked.
    pub fn check(&self, topology_args: &TopologyArgs) -> Result<Desired, ConfigError> {
        let (replicas, primary_host_for_replicas) = match (
            &topology_args.primary_host,
            &topology_args.replication_primary_host,
        ) {
            (None, None) => (topology_args.replicas()?, PRIMARY_HOST_UNSET.to_string()),
            (None, Some(_)) => (
                topology_args.replicas()?,
                topology_args.primary_host_for_replicas()?,
            ),
            (Some(_), _) => (
                topology_args.topology()?.replicas,
                topology_args.primary_host_for_replicas()?,
            ),
        };
        if topology_args.admin_password_file.is_some() {
            topology_args.admin()?;
        }
        topology_args.timeout()?;
        self.desired(replicas.len(), primary_host_for_replicas, false)
    }

    pub fn config(&self, topology_args: &TopologyArgs) -> Result<Config, ConfigError> {
        let topology = topology_args.topology()?;
        let desired = self.desired(
            topology.replicas.len(),
            topology_args.primary_host_for_replicas()?,
            true,
        )?;
        Ok(Config {
            admin: topology_args.admin()?,
            timeout: topology_args.timeout()?,
            topology,
            desired,
            wait_for_catch_up: self.wait_for_catch_up,
        })
    }
}

//! Command line, environment and the spec file → a validated [`Config`]. Every rule the servers
//! would enforce later is checked here first, so a bad value fails before any server is touched.

pub mod rules;
pub mod spec;
pub mod topology;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::types::Credentials;
pub(crate) use rules::reject;
pub use rules::{check_database_name, read_password, ConfigError};
pub use spec::{ApplySettings, DatabaseReplication, Desired, Mode, Spec};
pub use topology::{check_host, Topology, TopologyArgs};

#[derive(Parser, Debug)]
#[command(
    name = "immudb-hook",
    version,
    about = "Converges an immudb primary and its read replicas to a declared replication topology"
)]
pub struct Cli {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Log format on stderr.
    #[arg(long, env = "IMMUDB_HOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the primary databases, the replication user and the replica databases.
    Converge(ConvergeArgs),
    /// Write a probe key into a canary database on the primary and read it back from every replica.
    Verify(VerifyArgs),
    /// Back up databases (from a replica by default) into a directory or S3, incrementally, in
    /// immuadmin's hot-backup format.
    Backup(crate::backup::config::BackupArgs),
    /// Restore databases from their backups into the primary, verified before anything is written.
    Restore(crate::backup::config::RestoreArgs),
    /// Copy each database from the most advanced replica into a new, empty primary.
    RebuildPrimary(crate::backup::config::RebuildArgs),
    /// Run beside immudb in a pod: configure it, repair it, and decide whether it is Ready.
    Agent(crate::agent::AgentArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

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

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The canary database the probe key is written to (never a user database).
    #[arg(long, env = "IMMUDB_HOOK_VERIFY_DATABASE")]
    pub database: String,
    /// Write nothing: check that every replica holds the transactions the primary had at start.
    #[arg(long, env = "IMMUDB_HOOK_VERIFY_READ_ONLY")]
    pub read_only: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub topology: Topology,
    pub admin: Credentials,
    pub timeout: Duration,
    pub desired: Desired,
    pub wait_for_catch_up: bool,
}

#[derive(Clone, Debug)]
pub struct VerifyConfig {
    pub topology: Topology,
    pub admin: Credentials,
    pub timeout: Duration,
    pub database: String,
    pub read_only: bool,
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

impl VerifyArgs {
    pub fn config(&self, topology_args: &TopologyArgs) -> Result<VerifyConfig, ConfigError> {
        if !(self.read_only && self.database == "defaultdb") {
            // defaultdb is where clients write: verify writes into it never, only reads.
            check_database_name("--database", &self.database)?;
        }
        Ok(VerifyConfig {
            topology: topology_args.topology()?,
            admin: topology_args.admin()?,
            timeout: topology_args.timeout()?,
            database: self.database.clone(),
            read_only: self.read_only,
        })
    }
}

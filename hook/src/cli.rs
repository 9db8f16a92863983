//! The command tree: the `immudb-hook` command, its global flags and one subcommand per job.
//! The top layer, beside `main.rs`: it names every subcommand's `Args` and nothing imports it.

use clap::{Parser, Subcommand, ValueEnum};

use crate::agent::AgentArgs;
use crate::backup::config::{BackupArgs, RebuildArgs, RestoreArgs};
use crate::config::TopologyArgs;
use crate::converge::ConvergeArgs;
use crate::kube::LeaseArgs;
use crate::verify::VerifyArgs;

#[derive(Parser, Debug)]
#[command(
    name = "immudb-hook",
    version,
    about = "Converges an immudb primary and its read replicas to a declared replication topology"
)]
pub struct Cli {
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
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
    Backup(BackupArgs),
    /// Restore databases from their backups into the primary, verified before anything is written.
    Restore(RestoreArgs),
    /// Copy each database from the most advanced replica into a new, empty primary.
    RebuildPrimary(RebuildArgs),
    /// Run beside immudb in a pod: configure it, repair it, and decide whether it is Ready.
    Agent(AgentArgs),
}

impl Command {
    /// The subcommand's name as typed, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Converge(_) => "converge",
            Command::Verify(_) => "verify",
            Command::Backup(_) => "backup",
            Command::Restore(_) => "restore",
            Command::RebuildPrimary(_) => "rebuild-primary",
            Command::Agent(_) => "agent",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

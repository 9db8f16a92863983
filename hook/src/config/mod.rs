//! Command line, environment and the spec file → a validated [`Config`]. Every rule the servers
//! would enforce later is checked here first, so a bad value fails before any server is touched.

pub mod spec;
pub mod topology;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    #[command(flatten)]
    pub lease: crate::kube::LeaseArgs,
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

/// A password read from a file. It never prints: `Debug` and `Display` show a placeholder.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A rejected value: the flag or spec key, the value, and the rule it breaks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {flag} {value:?}: {rule}")]
pub struct ConfigError {
    pub flag: String,
    pub value: String,
    pub rule: String,
}

pub(crate) fn reject<T>(
    flag: impl Into<String>,
    value: impl fmt::Display,
    rule: impl Into<String>,
) -> Result<T, ConfigError> {
    Err(ConfigError {
        flag: flag.into(),
        value: value.to_string(),
        rule: rule.into(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        })
    }
}

#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
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

/// immudb's database name rules, plus lower case (immudb folds names, which would make the
/// hook's comparisons miss) and the two reserved names.
pub fn check_database_name(flag: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 128 {
        return reject(flag, name, "database names are 1 to 128 characters long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return reject(
            flag,
            name,
            "database names allow lower-case letters, digits and '_' only (immudb folds upper case)",
        );
    }
    if name == "systemdb" || name == "defaultdb" {
        return reject(flag, name, "systemdb and defaultdb are reserved by immudb");
    }
    Ok(())
}

fn check_user_name(flag: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return reject(flag, name, "user names allow letters, digits and '_' only");
    }
    Ok(())
}

/// Reads a password file; a trailing newline (as `echo` writes) is not part of the password.
pub fn read_password(flag: &str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).or_else(|e| {
        reject(
            flag,
            path.display(),
            format!("cannot read the password file: {e}"),
        )
    })?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return reject(flag, path.display(), "the password file is empty");
    }
    Ok(Secret::new(password))
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

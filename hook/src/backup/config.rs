//! Command-line arguments of `backup`, `restore` and `rebuild-primary`, validated into configs
//! before anything is touched. Secrets (the admin password, S3 keys) come only from files; the
//! destination's flags are in [`super::destination`].

use std::time::Duration;

use clap::Args;
use immudb_txlog::Hash;

use super::catalog::parse_hash;
use super::destination::check_prefix;
use super::destination::{StorageArgs, StorageConfig};
use crate::config::{check_database_name, check_host, reject, ConfigError, Topology, TopologyArgs};
use crate::types::settings::duration_flag;
use crate::types::Credentials;

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Databases to back up, comma separated.
    #[arg(long, env = "IMMUDB_HOOK_DATABASES", value_delimiter = ',')]
    pub databases: Vec<String>,
    /// Where to read: `replica` (the first ready replica; the primary when there are none),
    /// `primary`, or a host name.
    #[arg(long, env = "IMMUDB_HOOK_BACKUP_SOURCE", default_value = "replica")]
    pub source: String,
    /// Start a new chain (a full backup) when the newest chain began this many days ago (0: never).
    #[arg(
        long,
        env = "IMMUDB_HOOK_BACKUP_NEW_CHAIN_AFTER_DAYS",
        default_value_t = 7
    )]
    pub new_chain_after_days: u32,
    /// Start a new chain now.
    #[arg(long)]
    pub full: bool,
    /// Transactions read ahead (TxById and exportTx in flight) while earlier ones are written.
    #[arg(long, env = "IMMUDB_HOOK_BACKUP_READ_AHEAD", default_value_t = DEFAULT_READ_AHEAD)]
    pub read_ahead: usize,
    /// Retention: keep the newest N chains (0: no count rule).
    #[arg(long, env = "IMMUDB_HOOK_BACKUP_KEEP_CHAINS", default_value_t = 4)]
    pub keep_chains: u32,
    /// Retention: keep chains written to in the last D days (0: no age rule).
    #[arg(long, env = "IMMUDB_HOOK_BACKUP_KEEP_DAYS", default_value_t = 0)]
    pub keep_days: u32,
    /// How long a replica may take to hold what the primary had committed when the run started
    /// (an asynchronous replica may sleep after a quiet period); then the next replica its agent
    /// calls Ready is tried, and with none left the run fails (exit 6).
    #[arg(long, env = "IMMUDB_HOOK_BACKUP_CATCH_UP_TIMEOUT", default_value = "60s", value_parser = duration_flag)]
    pub catch_up_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Databases to restore from their backups, comma separated.
    #[arg(long, env = "IMMUDB_HOOK_DATABASES", value_delimiter = ',')]
    pub databases: Vec<String>,
    /// Restore the (single) database under this name instead, e.g. next to the original.
    #[arg(long, env = "IMMUDB_HOOK_RESTORE_AS")]
    pub restore_as: Option<String>,
    /// The chain to restore from (its id, a directory name under the database); the newest by default.
    #[arg(long, env = "IMMUDB_HOOK_RESTORE_CHAIN")]
    pub chain: Option<String>,
    /// Stop after this transaction (undoing what came later), for a single database.
    #[arg(long, env = "IMMUDB_HOOK_RESTORE_UP_TO_TX")]
    pub up_to_tx: Option<u64>,
    /// Continue a database that already holds a prefix of the backup's history.
    #[arg(long, env = "IMMUDB_HOOK_RESTORE_APPEND")]
    pub append: bool,
    /// Only audit the backup: every object, record and entry, with no server contacted.
    #[arg(long, env = "IMMUDB_HOOK_RESTORE_VERIFY_ONLY")]
    pub verify_only: bool,
    /// HEX[@TX]: the chain must end with this Alh (a CurrentState txHash), or pass through it at
    /// transaction TX (for a single database).
    #[arg(long, env = "IMMUDB_HOOK_RESTORE_EXPECT_ALH")]
    pub expect_alh: Option<String>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// How many replicateTx calls a restore or rebuild keeps in flight.
#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// replicateTx calls in flight; lowered to the target database's maxConcurrency.
    #[arg(long, env = "IMMUDB_HOOK_PIPELINE_DEPTH", default_value_t = DEFAULT_PIPELINE_DEPTH)]
    pub pipeline_depth: usize,
}

#[derive(Args, Debug)]
pub struct RebuildArgs {
    /// Databases to copy from the most advanced replica into the (new, empty) primary.
    #[arg(long, env = "IMMUDB_HOOK_DATABASES", value_delimiter = ',')]
    pub databases: Vec<String>,
    /// Transactions read ahead from the replica (exportTx in flight).
    #[arg(long, env = "IMMUDB_HOOK_BACKUP_READ_AHEAD", default_value_t = DEFAULT_READ_AHEAD)]
    pub read_ahead: usize,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// immudb's default maxConcurrency, and the commit concurrency at which a real replica caught up
/// fastest on 2 cores (2,219 tx/s, against 791 at 10 and 131 one at a time).
pub const DEFAULT_PIPELINE_DEPTH: usize = 30;
/// Reads in flight during a backup or rebuild (BENCHMARKS.md, "Backup and restore").
pub const DEFAULT_READ_AHEAD: usize = 16;
const MAX_DEPTH: usize = 1024;

fn check_depth(flag: &'static str, depth: usize) -> Result<usize, ConfigError> {
    if depth == 0 || depth > MAX_DEPTH {
        return reject(flag, depth, format!("must be 1 to {MAX_DEPTH}"));
    }
    Ok(depth)
}

/// A state the restored history must reach: `alh` at transaction `tx`, or at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedState {
    pub alh: Hash,
    pub tx: Option<u64>,
}

impl ExpectedState {
    fn parse(text: &str) -> Result<ExpectedState, ConfigError> {
        let rule = "HEX or HEX@TX: an Alh of 64 hex digits (CurrentState's txHash), optionally at transaction TX (from 1)";
        let (hash, tx) = match text.trim().split_once('@') {
            Some((hash, tx)) => match tx.parse::<u64>() {
                Ok(tx) if tx > 0 => (hash, Some(tx)),
                _ => return reject("--expect-alh", text, rule),
            },
            None => (text.trim(), None),
        };
        let alh = parse_hash(&hash.to_ascii_lowercase());
        match alh {
            Some(alh) => Ok(ExpectedState { alh, tx }),
            None => reject("--expect-alh", text, rule),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The first ready replica; the primary when there are none.
    Replica,
    Primary,
    Host(String),
}

/// Retention: a chain is deleted when it is older than both rules allow; the newest chain never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub keep_chains: u32,
    pub keep_days: u32,
}

#[derive(Clone, Debug)]
pub struct BackupConfig {
    pub topology: Topology,
    pub admin: Credentials,
    pub timeout: Duration,
    pub storage: StorageConfig,
    pub databases: Vec<String>,
    pub source: Source,
    pub new_chain_after_days: u32,
    pub full: bool,
    pub retention: Retention,
    pub read_ahead: usize,
    pub catch_up_timeout: Duration,
}

/// The server a restore writes into.
#[derive(Clone, Debug)]
pub struct RestoreTarget {
    pub topology: Topology,
    pub admin: Credentials,
    pub pipeline_depth: usize,
}

#[derive(Clone, Debug)]
pub struct RestoreConfig {
    /// `None` for `--verify-only`: the backup is audited and no server is contacted.
    pub target: Option<RestoreTarget>,
    /// Bounds waiting for the server and each call's retries (and the storage's), never the
    /// transfer.
    pub timeout: Duration,
    pub storage: StorageConfig,
    /// (name in the backup, name to restore into).
    pub databases: Vec<(String, String)>,
    pub chain: Option<String>,
    pub up_to_tx: Option<u64>,
    pub append: bool,
    pub expect: Option<ExpectedState>,
}

#[derive(Clone, Debug)]
pub struct RebuildConfig {
    pub topology: Topology,
    pub admin: Credentials,
    pub timeout: Duration,
    pub databases: Vec<String>,
    pub read_ahead: usize,
    pub pipeline_depth: usize,
}

fn databases(flag: &'static str, names: &[String]) -> Result<Vec<String>, ConfigError> {
    let names: Vec<String> = names
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return reject(flag, "", "needs at least one database");
    }
    for (i, name) in names.iter().enumerate() {
        check_database_name(flag, name)?;
        if names[..i].contains(name) {
            return reject(flag, name, "each database must appear once");
        }
    }
    Ok(names)
}

impl BackupArgs {
    pub fn config(&self, topology_args: &TopologyArgs) -> Result<BackupConfig, ConfigError> {
        let source = match self.source.as_str() {
            "replica" => Source::Replica,
            "primary" => Source::Primary,
            host => {
                check_host("--source", host)?;
                Source::Host(host.to_string())
            }
        };
        Ok(BackupConfig {
            storage: self.storage.config()?,
            databases: databases("--databases", &self.databases)?,
            source,
            new_chain_after_days: self.new_chain_after_days,
            full: self.full,
            retention: Retention {
                keep_chains: self.keep_chains,
                keep_days: self.keep_days,
            },
            read_ahead: check_depth("--read-ahead", self.read_ahead)?,
            catch_up_timeout: self.catch_up_timeout,
            topology: topology_args.topology()?,
            admin: topology_args.admin()?,
            timeout: topology_args.timeout()?,
        })
    }
}

impl RestoreArgs {
    pub fn config(&self, topology_args: &TopologyArgs) -> Result<RestoreConfig, ConfigError> {
        let names = databases("--databases", &self.databases)?;
        let single = names.len() == 1;
        if let (Some(_), false) = (&self.up_to_tx, single) {
            return reject(
                "--up-to-tx",
                self.up_to_tx.unwrap_or(0),
                "restores one database only (--databases)",
            );
        }
        if self.up_to_tx == Some(0) {
            return reject("--up-to-tx", 0, "transactions are numbered from 1");
        }
        let databases = match &self.restore_as {
            Some(target) if single => {
                check_database_name("--restore-as", target)?;
                vec![(names[0].clone(), target.clone())]
            }
            Some(target) => {
                return reject(
                    "--restore-as",
                    target,
                    "renames one database only (--databases)",
                )
            }
            None => names.into_iter().map(|n| (n.clone(), n)).collect(),
        };
        if let Some(chain) = &self.chain {
            check_prefix(chain)
                .ok()
                .filter(|c| !c.is_empty() && !c.contains('/'))
                .map_or_else(
                    || {
                        reject(
                            "--chain",
                            chain,
                            "a chain id is one path segment, as `backup` prints it",
                        )
                    },
                    |_| Ok(()),
                )?;
        }
        let expect = match &self.expect_alh {
            Some(_) if !single => {
                return reject(
                    "--expect-alh",
                    self.expect_alh.as_deref().unwrap_or(""),
                    "checks one database only (--databases)",
                )
            }
            Some(text) => Some(ExpectedState::parse(text)?),
            None => None,
        };
        if let (Some(ExpectedState { tx: Some(at), .. }), Some(end)) = (&expect, self.up_to_tx) {
            if *at > end {
                return reject(
                    "--expect-alh",
                    self.expect_alh.as_deref().unwrap_or(""),
                    format!("names tx {at}, after --up-to-tx {end}"),
                );
            }
        }
        if self.verify_only && self.append {
            return reject(
                "--append",
                "true",
                "writes into a server; --verify-only writes nothing",
            );
        }
        // --verify-only needs no server: neither its address nor its password.
        let target = if self.verify_only {
            None
        } else {
            Some(RestoreTarget {
                topology: topology_args.topology()?,
                admin: topology_args.admin()?,
                pipeline_depth: check_depth("--pipeline-depth", self.pipeline.pipeline_depth)?,
            })
        };
        Ok(RestoreConfig {
            target,
            timeout: topology_args.timeout()?,
            storage: self.storage.config()?,
            databases,
            chain: self.chain.clone(),
            up_to_tx: self.up_to_tx,
            append: self.append,
            expect,
        })
    }
}

impl RebuildArgs {
    pub fn config(&self, topology_args: &TopologyArgs) -> Result<RebuildConfig, ConfigError> {
        let topology = topology_args.topology()?;
        if topology.replicas.is_empty() {
            return reject(
                "--replicas",
                "",
                "rebuild-primary copies from a replica: list at least one",
            );
        }
        Ok(RebuildConfig {
            databases: databases("--databases", &self.databases)?,
            read_ahead: check_depth("--read-ahead", self.read_ahead)?,
            pipeline_depth: check_depth("--pipeline-depth", self.pipeline.pipeline_depth)?,
            topology,
            admin: topology_args.admin()?,
            timeout: topology_args.timeout()?,
        })
    }
}

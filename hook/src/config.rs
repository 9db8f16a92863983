//! Command line and environment → a validated [`Config`]. Every rule the servers would enforce
//! later is checked here first, so a bad value fails before any server is touched.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::plan::ReplicaOptions;
use crate::tls::TrustedCa;

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
    /// Write a key on the primary and read it back from every replica.
    Verify(VerifyArgs),
    /// Back up databases (from a replica by default) into a directory or S3, incrementally, in
    /// immuadmin's hot-backup format.
    Backup(crate::backup::config::BackupArgs),
    /// Restore databases from their backups into the primary, verified before anything is written.
    Restore(crate::backup::config::RestoreArgs),
    /// Copy each database from the most advanced replica into a new, empty primary.
    RebuildPrimary(crate::backup::config::RebuildArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Per-database replication: the hook creates replica databases on every replica.
    Database,
    /// Server-wide replication of systemdb and defaultdb, set up through env on the replicas.
    Systemdb,
}

#[derive(Args, Debug)]
pub struct TopologyArgs {
    /// Address the hook dials for the primary.
    #[arg(long, env = "IMMUDB_HOOK_PRIMARY_HOST")]
    pub primary_host: String,
    /// Host the replicas replicate from (e.g. the primary Service); defaults to --primary-host.
    #[arg(long, env = "IMMUDB_HOOK_REPLICATION_PRIMARY_HOST")]
    pub replication_primary_host: Option<String>,
    /// Replica addresses, comma separated (instead of the StatefulSet form).
    #[arg(long, env = "IMMUDB_HOOK_REPLICAS", value_delimiter = ',')]
    pub replicas: Vec<String>,
    /// StatefulSet form: the replica StatefulSet's name (pods are NAME-0 … NAME-{count-1}).
    #[arg(long, env = "IMMUDB_HOOK_REPLICA_STATEFULSET")]
    pub replica_statefulset: Option<String>,
    /// StatefulSet form: the headless Service that gives the replica pods their DNS names.
    #[arg(long, env = "IMMUDB_HOOK_REPLICA_SERVICE")]
    pub replica_service: Option<String>,
    /// StatefulSet form: the namespace of the replica pods.
    #[arg(long, env = "IMMUDB_HOOK_NAMESPACE")]
    pub namespace: Option<String>,
    /// StatefulSet form: how many replica pods there are.
    #[arg(long, env = "IMMUDB_HOOK_REPLICA_COUNT")]
    pub replica_count: Option<u32>,
    /// StatefulSet form: the cluster's DNS domain.
    #[arg(
        long,
        env = "IMMUDB_HOOK_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// immudb's gRPC port on every node.
    #[arg(long, env = "IMMUDB_HOOK_GRPC_PORT", default_value_t = 3322)]
    pub grpc_port: u16,
    /// immudb's metrics and health port on every node.
    #[arg(long, env = "IMMUDB_HOOK_METRICS_PORT", default_value_t = 9497)]
    pub metrics_port: u16,
    /// The system administrator's user name.
    #[arg(long, env = "IMMUDB_HOOK_ADMIN_USER", default_value = "immudb")]
    pub admin_user: String,
    /// File holding the administrator's password (a mounted Secret).
    #[arg(long, env = "IMMUDB_HOOK_ADMIN_PASSWORD_FILE")]
    pub admin_password_file: PathBuf,
    /// Overall deadline, in seconds, for waiting and converging.
    #[arg(long, env = "IMMUDB_HOOK_TIMEOUT_SECONDS", default_value_t = 300)]
    pub timeout_seconds: u64,
    /// CA certificate (PEM) of the immudb servers, when they serve TLS; plaintext without it.
    #[arg(long, env = "IMMUDB_HOOK_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// The hosts file the resolver reads first.
    #[arg(
        long,
        env = "IMMUDB_HOOK_HOSTS_FILE",
        default_value = "/etc/hosts",
        hide = true
    )]
    pub hosts_file: PathBuf,
    /// The resolver configuration (nameservers, search domains, ndots).
    #[arg(
        long,
        env = "IMMUDB_HOOK_RESOLV_CONF",
        default_value = "/etc/resolv.conf",
        hide = true
    )]
    pub resolv_conf: PathBuf,
}

#[derive(Args, Debug)]
pub struct ConvergeArgs {
    /// Replication mode.
    #[arg(long, env = "IMMUDB_HOOK_MODE", value_enum, default_value_t = Mode::Database)]
    pub mode: Mode,
    /// Databases to create on the primary and replicate, comma separated (database mode).
    #[arg(long, env = "IMMUDB_HOOK_DATABASES", value_delimiter = ',')]
    pub databases: Vec<String>,
    /// The user replicas authenticate as on the primary (database mode).
    #[arg(
        long,
        env = "IMMUDB_HOOK_REPLICATION_USER",
        default_value = "replicator"
    )]
    pub replication_user: String,
    /// File holding the replication user's password (database mode).
    #[arg(long, env = "IMMUDB_HOOK_REPLICATION_PASSWORD_FILE")]
    pub replication_password_file: Option<PathBuf>,
    /// Synchronous replication: the primary waits for --sync-acks replicas per commit.
    #[arg(long, env = "IMMUDB_HOOK_SYNC_REPLICATION")]
    pub sync_replication: bool,
    /// Acknowledgements the primary waits for (1 ≤ acks ≤ replicas; only with --sync-replication).
    #[arg(long, env = "IMMUDB_HOOK_SYNC_ACKS", default_value_t = 0)]
    pub sync_acks: u32,
    /// Transactions a replica prefetches.
    #[arg(
        long,
        env = "IMMUDB_HOOK_PREFETCH_TX_BUFFER_SIZE",
        default_value_t = 100
    )]
    pub prefetch_tx_buffer_size: u32,
    /// Transactions a replica commits concurrently.
    #[arg(
        long,
        env = "IMMUDB_HOOK_REPLICATION_COMMIT_CONCURRENCY",
        default_value_t = 10
    )]
    pub replication_commit_concurrency: u32,
    /// Let a replica discard transactions it has that the primary has not (after a failover).
    #[arg(long, env = "IMMUDB_HOOK_ALLOW_TX_DISCARDING")]
    pub allow_tx_discarding: bool,
    /// Skip the replica's integrity check of replicated transactions.
    #[arg(long, env = "IMMUDB_HOOK_SKIP_INTEGRITY_CHECK")]
    pub skip_integrity_check: bool,
    /// Make replicas wait for indexing before acknowledging.
    #[arg(long, env = "IMMUDB_HOOK_WAIT_FOR_INDEXING")]
    pub wait_for_indexing: bool,
    /// After converging, wait until every replica holds the primary's transactions seen at start.
    #[arg(long, env = "IMMUDB_HOOK_WAIT_FOR_CATCH_UP")]
    pub wait_for_catch_up: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Database to write the probe key to and read it from.
    #[arg(long, env = "IMMUDB_HOOK_VERIFY_DATABASE", default_value = "defaultdb")]
    pub database: String,
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {flag} {value:?}: {rule}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub value: String,
    pub rule: String,
}

pub(crate) fn reject<T>(
    flag: &'static str,
    value: impl fmt::Display,
    rule: impl Into<String>,
) -> Result<T, ConfigError> {
    Err(ConfigError {
        flag,
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

/// Where the nodes are and how to reach them.
#[derive(Clone, Debug)]
pub struct Topology {
    pub primary: String,
    pub replicas: Vec<String>,
    pub grpc_port: u16,
    pub metrics_port: u16,
    pub hosts_file: PathBuf,
    pub resolv_conf: PathBuf,
    /// Set when the servers speak TLS on gRPC and on the metrics port.
    pub tls: Option<TrustedCa>,
}

#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

/// Per-database replication: what the primary and each replica must end up with.
#[derive(Clone, Debug)]
pub struct DatabaseReplication {
    pub databases: Vec<String>,
    pub replication: Credentials,
    /// The primary host written into every replica database's settings.
    pub primary_host_for_replicas: String,
    pub sync_acks: Option<u32>,
    pub options: ReplicaOptions,
}

#[derive(Clone, Debug)]
pub enum Desired {
    Database(DatabaseReplication),
    /// Replicas replicate systemdb from this host; the hook only checks them.
    Systemdb {
        primary_host_for_replicas: String,
    },
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
}

/// A DNS name as Kubernetes gives them: dot-separated RFC 1123 labels, or an IP address.
pub(crate) fn check_host(flag: &'static str, host: &str) -> Result<(), ConfigError> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
        return reject(
            flag,
            host,
            "must be an IP address or a DNS name of letters, digits, '-' and '.'",
        );
    }
    Ok(())
}

/// immudb's database name rules, plus lower case (immudb folds names, which would make the
/// hook's comparisons miss) and the two reserved names.
pub fn check_database_name(flag: &'static str, name: &str) -> Result<(), ConfigError> {
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

fn check_user_name(flag: &'static str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return reject(flag, name, "user names allow letters, digits and '_' only");
    }
    Ok(())
}

/// Reads a password file; a trailing newline (as `echo` writes) is not part of the password.
pub fn read_password(flag: &'static str, path: &Path) -> Result<Secret, ConfigError> {
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

impl TopologyArgs {
    fn replica_hosts(&self) -> Result<Vec<String>, ConfigError> {
        // An empty value (IMMUDB_HOOK_REPLICAS="" with no replicas) means no replicas.
        let listed: Vec<String> = self
            .replicas
            .iter()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        let statefulset_form = self.replica_statefulset.is_some() || self.replica_count.is_some();
        if !listed.is_empty() && statefulset_form {
            return reject(
                "--replicas",
                self.replicas.join(","),
                "give replicas either as a list or in the StatefulSet form (--replica-statefulset, --replica-count), not both",
            );
        }
        if !statefulset_form {
            return Ok(listed);
        }
        let Some(statefulset) = &self.replica_statefulset else {
            return reject(
                "--replica-statefulset",
                "",
                "is required with --replica-count",
            );
        };
        let Some(service) = &self.replica_service else {
            return reject(
                "--replica-service",
                "",
                "is required with --replica-statefulset",
            );
        };
        let Some(namespace) = &self.namespace else {
            return reject("--namespace", "", "is required with --replica-statefulset");
        };
        let count = self.replica_count.unwrap_or(0);
        Ok((0..count)
            .map(|i| {
                format!(
                    "{statefulset}-{i}.{service}.{namespace}.svc.{}",
                    self.cluster_domain
                )
            })
            .collect())
    }

    pub fn topology(&self) -> Result<Topology, ConfigError> {
        check_host("--primary-host", &self.primary_host)?;
        let replicas = self.replica_hosts()?;
        let mut seen = BTreeSet::from([self.primary_host.as_str()]);
        for host in &replicas {
            check_host("--replicas", host)?;
            if !seen.insert(host) {
                return reject(
                    "--replicas",
                    host,
                    "each node must appear once (and not be the primary)",
                );
            }
        }
        if self.grpc_port == 0 {
            return reject("--grpc-port", 0, "ports are 1 to 65535");
        }
        if self.metrics_port == 0 {
            return reject("--metrics-port", 0, "ports are 1 to 65535");
        }
        Ok(Topology {
            primary: self.primary_host.clone(),
            replicas,
            grpc_port: self.grpc_port,
            metrics_port: self.metrics_port,
            hosts_file: self.hosts_file.clone(),
            resolv_conf: self.resolv_conf.clone(),
            tls: self.trusted_ca()?,
        })
    }

    fn trusted_ca(&self) -> Result<Option<TrustedCa>, ConfigError> {
        let Some(path) = &self.tls_ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path).or_else(|e| {
            reject(
                "--tls-ca-file",
                path.display(),
                format!("cannot read the CA file: {e}"),
            )
        })?;
        TrustedCa::from_pem(&pem)
            .map(Some)
            .or_else(|rule| reject("--tls-ca-file", path.display(), rule))
    }

    pub(crate) fn admin(&self) -> Result<Credentials, ConfigError> {
        check_user_name("--admin-user", &self.admin_user)?;
        Ok(Credentials {
            user: self.admin_user.clone(),
            password: read_password("--admin-password-file", &self.admin_password_file)?,
        })
    }

    pub(crate) fn timeout(&self) -> Result<Duration, ConfigError> {
        if self.timeout_seconds == 0 {
            return reject("--timeout-seconds", 0, "must be at least 1");
        }
        Ok(Duration::from_secs(self.timeout_seconds))
    }
}

impl ConvergeArgs {
    pub fn config(&self, topology_args: &TopologyArgs) -> Result<Config, ConfigError> {
        let topology = topology_args.topology()?;
        let primary_host_for_replicas = topology_args
            .replication_primary_host
            .clone()
            .unwrap_or_else(|| topology.primary.clone());
        check_host("--replication-primary-host", &primary_host_for_replicas)?;
        let desired = match self.mode {
            Mode::Systemdb => {
                if !self.databases.is_empty() {
                    return reject(
                        "--databases",
                        self.databases.join(","),
                        "systemdb mode replicates systemdb and defaultdb only; other databases need --mode database",
                    );
                }
                Desired::Systemdb {
                    primary_host_for_replicas,
                }
            }
            Mode::Database => Desired::Database(
                self.database_replication(topology.replicas.len(), primary_host_for_replicas)?,
            ),
        };
        Ok(Config {
            admin: topology_args.admin()?,
            timeout: topology_args.timeout()?,
            topology,
            desired,
            wait_for_catch_up: self.wait_for_catch_up,
        })
    }

    fn database_replication(
        &self,
        replica_count: usize,
        primary_host_for_replicas: String,
    ) -> Result<DatabaseReplication, ConfigError> {
        if self.databases.is_empty() {
            return reject(
                "--databases",
                "",
                "database mode needs at least one database",
            );
        }
        let mut seen = BTreeSet::new();
        for name in &self.databases {
            check_database_name("--databases", name)?;
            if !seen.insert(name) {
                return reject("--databases", name, "each database must appear once");
            }
        }
        check_user_name("--replication-user", &self.replication_user)?;
        let sync_acks = match (self.sync_replication, self.sync_acks) {
            (false, 0) => None,
            (false, acks) => {
                return reject("--sync-acks", acks, "acknowledgements need --sync-replication")
            }
            (true, 0) => {
                return reject(
                    "--sync-acks",
                    0,
                    "synchronous replication needs at least 1 acknowledgement",
                )
            }
            (true, acks) if acks as usize > replica_count => {
                return reject(
                    "--sync-acks",
                    acks,
                    format!("cannot exceed the number of replicas ({replica_count}): the primary would block every write"),
                )
            }
            (true, acks) => Some(acks),
        };
        if self.prefetch_tx_buffer_size == 0 {
            return reject("--prefetch-tx-buffer-size", 0, "must be at least 1");
        }
        if self.replication_commit_concurrency == 0 {
            return reject("--replication-commit-concurrency", 0, "must be at least 1");
        }
        let Some(password_file) = &self.replication_password_file else {
            return reject(
                "--replication-password-file",
                "",
                "is required in database mode",
            );
        };
        Ok(DatabaseReplication {
            databases: self.databases.clone(),
            replication: Credentials {
                user: self.replication_user.clone(),
                password: read_password("--replication-password-file", password_file)?,
            },
            primary_host_for_replicas,
            sync_acks,
            options: ReplicaOptions {
                sync_replication: sync_acks.is_some(),
                prefetch_tx_buffer_size: self.prefetch_tx_buffer_size,
                replication_commit_concurrency: self.replication_commit_concurrency,
                allow_tx_discarding: self.allow_tx_discarding,
                skip_integrity_check: self.skip_integrity_check,
                wait_for_indexing: self.wait_for_indexing,
            },
        })
    }
}

impl VerifyArgs {
    pub fn config(&self, topology_args: &TopologyArgs) -> Result<VerifyConfig, ConfigError> {
        if self.database != "defaultdb" {
            check_database_name("--database", &self.database)?;
        }
        Ok(VerifyConfig {
            topology: topology_args.topology()?,
            admin: topology_args.admin()?,
            timeout: topology_args.timeout()?,
            database: self.database.clone(),
        })
    }
}

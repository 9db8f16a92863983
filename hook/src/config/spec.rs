//! The desired state: a JSON file the chart renders from its values (a ConfigMap) and the Job and
//! every agent read. Keys mirror the values file, so an error names the key an operator set.
//! Validation checks every rule immudb would enforce later, before any server is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::rules::{check_database_name, check_user_name, read_password, reject, ConfigError};
use crate::types::settings::{parse_duration, Kind};
use crate::types::{
    Credentials, DesiredDatabase, PrimaryDesired, ReplicaDesired, ReplicaOptions, Secret, Setting,
    StorageSettings,
};

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Per-database replication: replica databases are created on every replica.
    #[default]
    Database,
    /// Server-wide replication of systemdb and defaultdb, set up through env on the replicas.
    Systemdb,
}

/// When changed storage settings take effect on existing databases.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ApplySettings {
    /// Stored now; immudb applies them the next time the database is loaded (a pod restart).
    #[default]
    OnReload,
    /// The Job reloads each changed database, one node at a time, replicas before the primary.
    Immediately,
}

type SettingsSpec = BTreeMap<String, Value>;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DatabaseSpec {
    Name(String),
    WithSettings(NamedDatabaseSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedDatabaseSpec {
    name: String,
    #[serde(default)]
    settings: SettingsSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SyncSpec {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    acks: u32,
}

/// Catch-up speed measured on immudb 1.10.0: commit concurrency 10 (immudb's default) gave
/// ~755 tx/s, 30 gave ~1,990 tx/s. 30 is also immudb's default maxConcurrency, the upper bound.
pub const DEFAULT_COMMIT_CONCURRENCY: u32 = 30;
/// immudb's default; 1000 added ~10 % speed but holds that many whole transactions in memory.
pub const DEFAULT_PREFETCH_TX_BUFFER_SIZE: u32 = 100;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReplicationSpec {
    #[serde(default)]
    sync: SyncSpec,
    #[serde(default = "default_prefetch")]
    prefetch_tx_buffer_size: u32,
    #[serde(default = "default_commit_concurrency")]
    commit_concurrency: u32,
    #[serde(default)]
    allow_tx_discarding: bool,
    #[serde(default)]
    skip_integrity_check: bool,
    #[serde(default)]
    wait_for_indexing: bool,
}

impl Default for ReplicationSpec {
    fn default() -> Self {
        ReplicationSpec {
            sync: SyncSpec::default(),
            prefetch_tx_buffer_size: DEFAULT_PREFETCH_TX_BUFFER_SIZE,
            commit_concurrency: DEFAULT_COMMIT_CONCURRENCY,
            allow_tx_discarding: false,
            skip_integrity_check: false,
            wait_for_indexing: false,
        }
    }
}

fn default_prefetch() -> u32 {
    DEFAULT_PREFETCH_TX_BUFFER_SIZE
}

fn default_commit_concurrency() -> u32 {
    DEFAULT_COMMIT_CONCURRENCY
}

fn default_replication_user() -> String {
    "replicator".into()
}

/// The spec file as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    databases: Vec<DatabaseSpec>,
    /// Storage settings for every database; each database's own `settings` override them.
    #[serde(default)]
    settings: SettingsSpec,
    #[serde(default)]
    apply_settings: ApplySettings,
    #[serde(default = "default_replication_user")]
    replication_user: String,
    #[serde(default)]
    replication: ReplicationSpec,
}

/// Per-database replication: what the primary and each replica must end up with.
#[derive(Clone, Debug)]
pub struct DatabaseReplication {
    pub databases: Vec<DesiredDatabase>,
    pub replication: Credentials,
    /// The primary host written into every replica database's settings.
    pub primary_host_for_replicas: String,
    pub sync_acks: Option<u32>,
    pub options: ReplicaOptions,
    pub apply_settings: ApplySettings,
}

impl DatabaseReplication {
    /// The primary's side of the spec.
    pub fn primary_desired(&self) -> PrimaryDesired {
        PrimaryDesired {
            databases: self.databases.clone(),
            sync_acks: self.sync_acks,
            replication_user: self.replication.user.clone(),
        }
    }

    /// Every replica's side: replica databases of the primary, reached on `grpc_port`.
    pub fn replica_desired(&self, grpc_port: u16) -> ReplicaDesired {
        ReplicaDesired {
            databases: self.databases.clone(),
            primary_host: self.primary_host_for_replicas.clone(),
            primary_port: u32::from(grpc_port),
            replication_user: self.replication.user.clone(),
            replication_password: self.replication.password.clone(),
            options: self.options.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Desired {
    Database(DatabaseReplication),
    /// Replicas replicate systemdb from this host; the hook only checks them.
    Systemdb {
        primary_host_for_replicas: String,
    },
}

impl Desired {
    /// The desired state in words, for `converge --check`.
    pub fn describe(&self) -> String {
        let spec = match self {
            Desired::Systemdb {
                primary_host_for_replicas,
            } => {
                return format!(
                    "mode systemdb: replicas replicate systemdb and defaultdb from {primary_host_for_replicas}"
                )
            }
            Desired::Database(spec) => spec,
        };
        let o = &spec.options;
        let sync = spec
            .sync_acks
            .map_or("async".to_string(), |acks| format!("sync, {acks} ack(s)"));
        let mut lines = vec![format!(
            "mode database: replicas replicate from {} as '{}' ({sync}, prefetch {}, commit concurrency {}); settings apply {:?}",
            spec.primary_host_for_replicas,
            spec.replication.user,
            o.prefetch_tx_buffer_size,
            o.replication_commit_concurrency,
            spec.apply_settings
        )];
        for db in &spec.databases {
            let settings: Vec<String> = db
                .storage
                .iter()
                .map(|(setting, value)| format!("{setting}={}", setting.display(value)))
                .collect();
            lines.push(format!("database {}: {}", db.name, settings.join(" ")));
        }
        lines.join("\n")
    }
}

/// What validation needs besides the file: facts from the command line.
pub struct Context<'a> {
    pub replica_count: usize,
    pub primary_host_for_replicas: String,
    pub replication_password_file: Option<&'a Path>,
    /// Whether a server will be dialled. `converge --check` dials none, so it needs no password
    /// (a password file it is given is still read, to check it).
    pub dials: bool,
}

impl Spec {
    pub fn read(path: &Path) -> Result<Spec, ConfigError> {
        let text = std::fs::read_to_string(path).or_else(|e| {
            reject(
                "--spec-file",
                path.display(),
                format!("cannot read the file: {e}"),
            )
        })?;
        serde_json::from_str(&text).or_else(|e| {
            reject(
                "--spec-file",
                path.display(),
                format!("is not a valid spec: {e}"),
            )
        })
    }

    pub fn desired(&self, context: Context<'_>) -> Result<Desired, ConfigError> {
        match self.mode {
            Mode::Systemdb if !self.databases.is_empty() => reject(
                "databases",
                self.database_names().join(","),
                "systemdb mode replicates systemdb and defaultdb only; other databases need mode database",
            ),
            Mode::Systemdb => Ok(Desired::Systemdb {
                primary_host_for_replicas: context.primary_host_for_replicas,
            }),
            Mode::Database => Ok(Desired::Database(self.database_replication(context)?)),
        }
    }

    fn database_names(&self) -> Vec<String> {
        self.databases
            .iter()
            .map(|db| match db {
                DatabaseSpec::Name(name) => name.clone(),
                DatabaseSpec::WithSettings(named) => named.name.clone(),
            })
            .collect()
    }

    fn databases(&self) -> Result<Vec<DesiredDatabase>, ConfigError> {
        if self.databases.is_empty() {
            return reject("databases", "", "database mode needs at least one database");
        }
        let defaults = storage_settings("settings", &self.settings)?;
        let mut seen = BTreeSet::new();
        let mut databases = Vec::new();
        for entry in &self.databases {
            let (name, overrides) = match entry {
                DatabaseSpec::Name(name) => (name, StorageSettings::default()),
                DatabaseSpec::WithSettings(named) => (
                    &named.name,
                    storage_settings(
                        &format!("databases[{}].settings", named.name),
                        &named.settings,
                    )?,
                ),
            };
            check_database_name("databases", name)?;
            if !seen.insert(name) {
                return reject("databases", name, "each database must appear once");
            }
            databases.push(DesiredDatabase {
                name: name.clone(),
                storage: defaults.overlaid(&overrides),
            });
        }
        Ok(databases)
    }

    fn sync_acks(&self, replica_count: usize) -> Result<Option<u32>, ConfigError> {
        let sync = &self.replication.sync;
        match (sync.enabled, sync.acks) {
            (false, 0) => Ok(None),
            (false, acks) => reject(
                "replication.sync.acks",
                acks,
                "acknowledgements need replication.sync.enabled",
            ),
            (true, 0) => reject(
                "replication.sync.acks",
                0,
                "synchronous replication needs at least 1 acknowledgement",
            ),
            (true, acks) if acks as usize > replica_count => reject(
                "replication.sync.acks",
                acks,
                format!("cannot exceed the number of replicas ({replica_count}): the primary would block every write"),
            ),
            (true, acks) => Ok(Some(acks)),
        }
    }

    fn database_replication(
        &self,
        context: Context<'_>,
    ) -> Result<DatabaseReplication, ConfigError> {
        let databases = self.databases()?;
        check_user_name("replicationUser", &self.replication_user)?;
        let sync_acks = self.sync_acks(context.replica_count)?;
        let r = &self.replication;
        if r.prefetch_tx_buffer_size == 0 {
            return reject("replication.prefetchTxBufferSize", 0, "must be at least 1");
        }
        if r.commit_concurrency == 0 {
            return reject("replication.commitConcurrency", 0, "must be at least 1");
        }
        if let Some(db) = databases
            .iter()
            .find(|db| u64::from(r.commit_concurrency) > db.storage.max_concurrency())
        {
            return reject(
                "replication.commitConcurrency",
                r.commit_concurrency,
                format!(
                    "exceeds maxConcurrency {} of database '{}': immudb accepts it, then fails every replicated transaction with 'max concurrency limit exceeded'",
                    db.storage.max_concurrency(),
                    db.name
                ),
            );
        }
        let password = match context.replication_password_file {
            Some(file) => read_password("--replication-password-file", file)?,
            None if !context.dials => Secret::default(),
            None => {
                return reject(
                    "--replication-password-file",
                    "",
                    "is required in database mode",
                )
            }
        };
        Ok(DatabaseReplication {
            databases,
            replication: Credentials {
                user: self.replication_user.clone(),
                password,
            },
            primary_host_for_replicas: context.primary_host_for_replicas,
            sync_acks,
            options: ReplicaOptions {
                sync_replication: sync_acks.is_some(),
                prefetch_tx_buffer_size: r.prefetch_tx_buffer_size,
                replication_commit_concurrency: r.commit_concurrency,
                allow_tx_discarding: r.allow_tx_discarding,
                skip_integrity_check: r.skip_integrity_check,
                wait_for_indexing: r.wait_for_indexing,
            },
            apply_settings: self.apply_settings,
        })
    }
}

/// One settings object → checked settings. `null` leaves a setting unmanaged.
fn storage_settings(path: &str, spec: &SettingsSpec) -> Result<StorageSettings, ConfigError> {
    let mut settings = StorageSettings::default();
    for (key, value) in spec {
        let at = format!("{path}.{key}");
        let Some(setting) = Setting::from_name(key) else {
            let allowed: Vec<&str> = Setting::ALL.iter().map(|s| s.name()).collect();
            return reject(
                at,
                key,
                format!("unknown setting; allowed: {}", allowed.join(", ")),
            );
        };
        let parsed = match (setting.kind(), value) {
            (_, Value::Null) => continue,
            (Kind::Duration, Value::String(text)) => parse_duration(text),
            (Kind::Flag, Value::Bool(flag)) => Ok(u64::from(*flag)),
            (Kind::Count | Kind::Bytes, Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| "must be a whole number".to_string()),
            (Kind::Duration, _) => Err("must be a duration such as 5ms or 24h".into()),
            (Kind::Flag, _) => Err("must be true or false".into()),
            (Kind::Count | Kind::Bytes, _) => Err("must be a whole number".into()),
        };
        let value_text = value.to_string();
        let checked = parsed.and_then(|v| setting.check(v).map(|()| v));
        match checked {
            Ok(v) => settings.set(setting, v),
            Err(rule) => return reject(at, value_text, rule),
        }
    }
    Ok(settings)
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;

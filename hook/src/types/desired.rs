//! The desired state of a node as the planner consumes it (databases, the primary's and each
//! replica's side) and immudb's replication settings of one database. `config` builds these from
//! the spec, `client` reads `ReplicationSettings` back from immudb, `plan` compares them.
//! A leaf: imports only the leaves `secret` and `settings`.

use super::secret::Secret;
use super::settings::StorageSettings;

/// A database's replication settings with every field resolved, as immudb reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationSettings {
    pub replica: bool,
    pub primary_database: String,
    pub primary_host: String,
    pub primary_port: u32,
    pub primary_username: String,
    pub primary_password: Secret,
    pub sync_replication: bool,
    pub sync_acks: u32,
    pub prefetch_tx_buffer_size: u32,
    pub replication_commit_concurrency: u32,
    pub allow_tx_discarding: bool,
    pub skip_integrity_check: bool,
    pub wait_for_indexing: bool,
}

impl ReplicationSettings {
    /// A writable database: synchronous with `sync_acks` acknowledgements, or asynchronous;
    /// every replica field explicitly empty, as immudb requires of a primary.
    pub fn writable(sync_acks: Option<u32>) -> ReplicationSettings {
        ReplicationSettings {
            sync_replication: sync_acks.is_some(),
            sync_acks: sync_acks.unwrap_or(0),
            ..Default::default()
        }
    }

    /// A replica that follows no primary: fenced by failover, or left so by a restore.
    pub fn follows_nobody(&self) -> bool {
        self.replica && self.primary_host.is_empty()
    }
}

/// The replica-side options every replica database gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaOptions {
    pub sync_replication: bool,
    pub prefetch_tx_buffer_size: u32,
    pub replication_commit_concurrency: u32,
    pub allow_tx_discarding: bool,
    pub skip_integrity_check: bool,
    pub wait_for_indexing: bool,
}

/// One database as declared: its name and the storage settings it must have on every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredDatabase {
    pub name: String,
    pub storage: StorageSettings,
}

impl DesiredDatabase {
    pub fn named(name: &str) -> DesiredDatabase {
        DesiredDatabase {
            name: name.to_string(),
            storage: StorageSettings::default(),
        }
    }
}

/// The primary's side: its databases (with the primary's sync settings) and the replication user.
#[derive(Clone, Debug)]
pub struct PrimaryDesired {
    pub databases: Vec<DesiredDatabase>,
    pub sync_acks: Option<u32>,
    pub replication_user: String,
}

impl PrimaryDesired {
    pub fn replication(&self) -> ReplicationSettings {
        ReplicationSettings::writable(self.sync_acks)
    }
}

/// One replica's side: every database as a replica of the same database on the primary.
#[derive(Clone, Debug)]
pub struct ReplicaDesired {
    pub databases: Vec<DesiredDatabase>,
    pub primary_host: String,
    pub primary_port: u32,
    pub replication_user: String,
    pub replication_password: Secret,
    pub options: ReplicaOptions,
}

impl ReplicaDesired {
    pub fn replication(&self, database: &str) -> ReplicationSettings {
        ReplicationSettings {
            replica: true,
            primary_database: database.to_string(),
            primary_host: self.primary_host.clone(),
            primary_port: self.primary_port,
            primary_username: self.replication_user.clone(),
            primary_password: self.replication_password.clone(),
            sync_replication: self.options.sync_replication,
            sync_acks: 0,
            prefetch_tx_buffer_size: self.options.prefetch_tx_buffer_size,
            replication_commit_concurrency: self.options.replication_commit_concurrency,
            allow_tx_discarding: self.options.allow_tx_discarding,
            skip_integrity_check: self.options.skip_integrity_check,
            wait_for_indexing: self.options.wait_for_indexing,
        }
    }
}

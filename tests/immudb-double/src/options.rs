//! A database's options as immudb 1.11.1 keeps them (`dbOptions`, pkg/server/db_options.go):
//! how CreateDatabaseV2 and UpdateDatabaseV2 apply a settings request (`overwriteWith`) and the
//! rules the result must pass (`Validate`), in immudb's order and with the texts a client
//! receives. Pure, so a test can put every settings request the hook sends through it.

use tonic::Status;

use crate::proto::{
    DatabaseNullableSettings, NullableBool, NullableString, NullableUint32,
    ReplicationNullableSettings,
};
use crate::rules::validate_error;
use crate::storage::Storage;

/// immudb's replicator defaults (pkg/replication/options.go), which `overwriteWith` gives a
/// replica whose request leaves them unset while the stored value is 0.
pub const DEFAULT_PREFETCH_TX_BUFFER_SIZE: u32 = 100;
pub const DEFAULT_REPLICATION_COMMIT_CONCURRENCY: u32 = 10;

/// Everything immudb stores for one database that the double models.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbOptions {
    pub replication: Replication,
    pub storage: Storage,
}

impl DbOptions {
    /// CreateDatabaseV2: immudb's defaults for a new database overwritten with the request
    /// (immudb 1.11.1 pkg/server/db_options.go, `overwriteWith` with existentDB false).
    pub fn created(db: &str, settings: Option<&DatabaseNullableSettings>) -> Result<Self, Status> {
        DbOptions::default().overwritten(db, settings, false)
    }

    /// UpdateDatabaseV2: the stored options overwritten with the request (immudb 1.11.1
    /// pkg/server/db_options.go, `overwriteWith` with existentDB true).
    pub fn updated(
        &self,
        db: &str,
        settings: Option<&DatabaseNullableSettings>,
    ) -> Result<Self, Status> {
        self.overwritten(db, settings, true)
    }

    // immudb 1.11.1 pkg/server/db_options.go, (*ImmuServer).overwriteWith: the settings fixed at
    // creation are refused first, then replication and storage settings are applied, then the
    // whole result is validated (replication rules before storage rules).
    fn overwritten(
        &self,
        db: &str,
        settings: Option<&DatabaseNullableSettings>,
        existing: bool,
    ) -> Result<Self, Status> {
        let empty = DatabaseNullableSettings::default();
        let settings = settings.unwrap_or(&empty);
        if existing {
            Storage::refuse_fixed(settings, db)?;
        }
        let replication = match &settings.replication_settings {
            Some(request) => self.replication.overwritten(request),
            None => self.replication.clone(),
        };
        let storage = self.storage.overwritten(settings);
        replication.validate(db)?;
        storage.validate(db)?;
        Ok(DbOptions {
            replication,
            storage,
        })
    }

    /// The settings as DatabaseListV2, GetDatabaseSettingsV2 and the create and update responses
    /// carry them (immudb 1.11.1 pkg/server/db_options.go, `databaseNullableSettings`): every
    /// field set, the replication password in clear text.
    pub fn to_nullable(&self) -> DatabaseNullableSettings {
        let mut settings = DatabaseNullableSettings {
            replication_settings: Some(self.replication.to_nullable()),
            autoload: Some(NullableBool { value: true }),
            ..Default::default()
        };
        self.storage.fill(&mut settings);
        settings
    }
}

/// The replication settings of one database, with every field resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replication {
    pub replica: bool,
    pub primary_database: String,
    pub primary_host: String,
    pub primary_port: u32,
    pub primary_username: String,
    pub primary_password: String,
    pub sync_replication: bool,
    pub sync_acks: u32,
    pub prefetch_tx_buffer_size: u32,
    pub replication_commit_concurrency: u32,
    pub allow_tx_discarding: bool,
    pub skip_integrity_check: bool,
    pub wait_for_indexing: bool,
}

fn set_flag(field: &Option<NullableBool>, target: &mut bool) {
    if let Some(v) = field {
        *target = v.value;
    }
}

/// A primary-only text or number: the request's value, else kept on a replica and cleared on a
/// primary.
fn primary_field<T: Clone + Default>(requested: Option<T>, replica: bool, target: &mut T) {
    match requested {
        Some(value) => *target = value,
        None if !replica => *target = T::default(),
        None => {}
    }
}

/// A replicator tuning number: the request's value, else immudb's default on a replica that
/// has none, and 0 on a primary.
fn replicator_field(
    requested: &Option<NullableUint32>,
    replica: bool,
    default: u32,
    target: &mut u32,
) {
    match requested {
        Some(v) => *target = v.value,
        None if replica && *target == 0 => *target = default,
        None if !replica => *target = 0,
        None => {}
    }
}

impl Replication {
    /// The request applied field by field (immudb 1.11.1 pkg/server/db_options.go,
    /// `overwriteWith`, replication part). A field the request sets takes its value. An unset
    /// one depends on the role the request leaves (`replica` is applied first): syncAcks
    /// becomes 0 on a replica; the primary's address and credentials are cleared on a primary;
    /// prefetch and commit concurrency are cleared on a primary and get immudb's defaults on a
    /// replica that has 0; syncReplication, allowTxDiscarding, skipIntegrityCheck and
    /// waitForIndexing keep their stored values.
    pub fn overwritten(&self, request: &ReplicationNullableSettings) -> Replication {
        let mut next = self.clone();
        let text = |field: &Option<NullableString>| field.as_ref().map(|v| v.value.clone());
        let number = |field: &Option<NullableUint32>| field.as_ref().map(|v| v.value);
        set_flag(&request.replica, &mut next.replica);
        let replica = next.replica;
        set_flag(&request.sync_replication, &mut next.sync_replication);
        match &request.sync_acks {
            Some(v) => next.sync_acks = v.value,
            None if replica => next.sync_acks = 0,
            None => {}
        }
        primary_field(
            text(&request.primary_database),
            replica,
            &mut next.primary_database,
        );
        primary_field(text(&request.primary_host), replica, &mut next.primary_host);
        primary_field(
            number(&request.primary_port),
            replica,
            &mut next.primary_port,
        );
        primary_field(
            text(&request.primary_username),
            replica,
            &mut next.primary_username,
        );
        primary_field(
            text(&request.primary_password),
            replica,
            &mut next.primary_password,
        );
        replicator_field(
            &request.prefetch_tx_buffer_size,
            replica,
            DEFAULT_PREFETCH_TX_BUFFER_SIZE,
            &mut next.prefetch_tx_buffer_size,
        );
        replicator_field(
            &request.replication_commit_concurrency,
            replica,
            DEFAULT_REPLICATION_COMMIT_CONCURRENCY,
            &mut next.replication_commit_concurrency,
        );
        set_flag(&request.allow_tx_discarding, &mut next.allow_tx_discarding);
        set_flag(
            &request.skip_integrity_check,
            &mut next.skip_integrity_check,
        );
        set_flag(&request.wait_for_indexing, &mut next.wait_for_indexing);
        next
    }

    /// immudb's replication rules, in its order (immudb 1.11.1 pkg/server/db_options.go,
    /// (*dbOptions).Validate). Its rule against negative syncAcks on a primary cannot be broken
    /// over the wire: the field is unsigned.
    pub fn validate(&self, db: &str) -> Result<(), Status> {
        if self.replica {
            // Every replica needs a prefetch buffer and a commit concurrency, also one that
            // follows nobody, and acknowledges nothing itself.
            let invalid = [
                ("PrefetchTxBufferSize", self.prefetch_tx_buffer_size == 0),
                (
                    "ReplicationCommitConcurrency",
                    self.replication_commit_concurrency == 0,
                ),
            ];
            if let Some((field, _)) = invalid.iter().find(|(_, bad)| *bad) {
                return Err(validate_error(format!(
                    "invalid value for replication option {field} on replica database '{db}'"
                )));
            }
            if self.sync_acks > 0 {
                // immudb's text names both fields.
                return Err(validate_error(format!(
                    "invalid value for replication option SyncAcks ReplicationCommitConcurrency on database '{db}'"
                )));
            }
            return Ok(());
        }
        // A primary may carry none of a replica's settings (an explicit zero or false is none).
        let replica_only = [
            ("PrimaryDatabase", !self.primary_database.is_empty()),
            ("PrimaryHost", !self.primary_host.is_empty()),
            ("PrimaryPort", self.primary_port != 0),
            ("PrimaryUsername", !self.primary_username.is_empty()),
            ("PrimaryPassword", !self.primary_password.is_empty()),
            ("PrefetchTxBufferSize", self.prefetch_tx_buffer_size != 0),
            (
                "ReplicationCommitConcurrency",
                self.replication_commit_concurrency != 0,
            ),
            ("AllowTxDiscarding", self.allow_tx_discarding),
            ("SkipIntegrityCheck", self.skip_integrity_check),
            ("WaitForIndexing", self.wait_for_indexing),
        ];
        if let Some((field, _)) = replica_only.iter().find(|(_, set)| *set) {
            return Err(validate_error(format!(
                "invalid value for replication option {field} on primary database '{db}'"
            )));
        }
        // Synchronous replication and acknowledgements go together on a primary.
        if self.sync_replication && self.sync_acks == 0 {
            return Err(validate_error(format!(
                "invalid replication options for primary database '{db}'. It is necessary to have at least one sync replica"
            )));
        }
        if !self.sync_replication && self.sync_acks > 0 {
            return Err(validate_error(format!(
                "invalid replication options for primary database '{db}'. SyncAcks should be set to 0"
            )));
        }
        Ok(())
    }

    /// The settings as the server returns them: every field set (the password in clear text, as
    /// immudb does).
    pub fn to_nullable(&self) -> ReplicationNullableSettings {
        let b = |value| Some(NullableBool { value });
        let n = |value| Some(NullableUint32 { value });
        let s = |value: &String| {
            Some(NullableString {
                value: value.clone(),
            })
        };
        ReplicationNullableSettings {
            replica: b(self.replica),
            primary_database: s(&self.primary_database),
            primary_host: s(&self.primary_host),
            primary_port: n(self.primary_port),
            primary_username: s(&self.primary_username),
            primary_password: s(&self.primary_password),
            sync_replication: b(self.sync_replication),
            sync_acks: n(self.sync_acks),
            prefetch_tx_buffer_size: n(self.prefetch_tx_buffer_size),
            replication_commit_concurrency: n(self.replication_commit_concurrency),
            allow_tx_discarding: b(self.allow_tx_discarding),
            skip_integrity_check: b(self.skip_integrity_check),
            wait_for_indexing: b(self.wait_for_indexing),
        }
    }
}

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;

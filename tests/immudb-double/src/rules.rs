//! immudb's validation rules, as observed on a running server (`shared/immudb-facts.md`): names,
//! permissions and replication settings, with the exact error texts and status codes.

use tonic::{Code, Status};

use crate::proto::{NullableBool, NullableString, NullableUint32, ReplicationNullableSettings};

pub const PERMISSION_READ: u32 = 1;
pub const PERMISSION_READ_WRITE: u32 = 2;
pub const PERMISSION_ADMIN: u32 = 254;
pub const PERMISSION_SYS_ADMIN: u32 = 255;

pub const DEFAULT_PREFETCH_TX_BUFFER_SIZE: u32 = 100;
pub const DEFAULT_REPLICATION_COMMIT_CONCURRENCY: u32 = 10;

/// immudb reports application errors as gRPC Unknown with a plain text.
pub fn unknown(text: impl Into<String>) -> Status {
    Status::new(Code::Unknown, text.into())
}

/// Checks a database name and folds it to lower case, as immudb does.
pub fn database_name(name: &str) -> Result<String, Status> {
    if name.is_empty() || name.len() > 128 {
        return Err(unknown("database name length outside of limits"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(unknown(
            "punctuation marks and symbols are not allowed in database name",
        ));
    }
    let folded = name.to_ascii_lowercase();
    if folded == "systemdb" || folded == "defaultdb" {
        return Err(Status::internal("database is reserved"));
    }
    Ok(folded)
}

pub fn username(name: &str) -> Result<(), Status> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Status::invalid_argument(
            "username can only contain letters, digits and underscores",
        ));
    }
    Ok(())
}

/// CreateUser and ChangePermission accept Read, ReadWrite, Admin and (a server quirk) values above 255.
pub fn permission(permission: u32) -> Result<(), Status> {
    match permission {
        PERMISSION_READ | PERMISSION_READ_WRITE | PERMISSION_ADMIN => Ok(()),
        PERMISSION_SYS_ADMIN => Err(unknown("can not create another system admin")),
        p if p > PERMISSION_SYS_ADMIN => Ok(()),
        _ => Err(unknown("unrecognized permission")),
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

impl Replication {
    /// Applies the fields a request sets; unset fields keep their value. Turning a replica into a
    /// primary clears the replica-only fields first, as immudb does on promotion.
    pub fn merged(&self, update: Option<&ReplicationNullableSettings>) -> Replication {
        let mut next = self.clone();
        let Some(u) = update else { return next };
        if self.replica && u.replica.as_ref().is_some_and(|r| !r.value) {
            next = Replication::default();
        }
        let b = |field: &Option<NullableBool>, target: &mut bool| {
            if let Some(v) = field {
                *target = v.value;
            }
        };
        let n = |field: &Option<NullableUint32>, target: &mut u32| {
            if let Some(v) = field {
                *target = v.value;
            }
        };
        let s = |field: &Option<NullableString>, target: &mut String| {
            if let Some(v) = field {
                target.clone_from(&v.value);
            }
        };
        b(&u.replica, &mut next.replica);
        s(&u.primary_database, &mut next.primary_database);
        s(&u.primary_host, &mut next.primary_host);
        n(&u.primary_port, &mut next.primary_port);
        s(&u.primary_username, &mut next.primary_username);
        s(&u.primary_password, &mut next.primary_password);
        b(&u.sync_replication, &mut next.sync_replication);
        n(&u.sync_acks, &mut next.sync_acks);
        n(
            &u.prefetch_tx_buffer_size,
            &mut next.prefetch_tx_buffer_size,
        );
        n(
            &u.replication_commit_concurrency,
            &mut next.replication_commit_concurrency,
        );
        b(&u.allow_tx_discarding, &mut next.allow_tx_discarding);
        b(&u.skip_integrity_check, &mut next.skip_integrity_check);
        b(&u.wait_for_indexing, &mut next.wait_for_indexing);
        if next.replica {
            let unset = |field: &Option<NullableUint32>| field.is_none();
            if unset(&u.prefetch_tx_buffer_size) && next.prefetch_tx_buffer_size == 0 {
                next.prefetch_tx_buffer_size = DEFAULT_PREFETCH_TX_BUFFER_SIZE;
            }
            if unset(&u.replication_commit_concurrency) && next.replication_commit_concurrency == 0
            {
                next.replication_commit_concurrency = DEFAULT_REPLICATION_COMMIT_CONCURRENCY;
            }
        }
        next
    }

    /// immudb's replication settings rules, with its doubled InvalidArgument prefix.
    pub fn validate(&self, db: &str) -> Result<(), Status> {
        let illegal = |detail: String| {
            Status::invalid_argument(format!(
                "illegal arguments: rpc error: code = InvalidArgument desc = illegal arguments: {detail}"
            ))
        };
        if self.replica {
            if self.sync_acks > 0 {
                return Err(illegal(format!(
                    "invalid value for replication option SyncAcks ReplicationCommitConcurrency on database '{db}'"
                )));
            }
            return Ok(());
        }
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
            return Err(illegal(format!(
                "invalid value for replication option {field} on primary database '{db}'"
            )));
        }
        if self.sync_replication && self.sync_acks == 0 {
            return Err(illegal(format!(
                "invalid replication options for primary database '{db}'. It is necessary to have at least one sync replica"
            )));
        }
        if !self.sync_replication && self.sync_acks > 0 {
            return Err(illegal(format!(
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
mod tests {
    use super::*;

    #[test]
    fn names_fold_and_reject() {
        assert_eq!(database_name("MyDb").unwrap(), "mydb");
        assert_eq!(
            database_name("DefaultDB").unwrap_err().code(),
            Code::Internal
        );
        assert_eq!(database_name("a-b").unwrap_err().code(), Code::Unknown);
        assert!(database_name(&"x".repeat(129)).is_err());
        assert!(database_name(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn permissions_follow_the_server() {
        for ok in [1, 2, 254, 256] {
            assert!(permission(ok).is_ok(), "{ok}");
        }
        for bad in [0, 3, 253] {
            assert_eq!(
                permission(bad).unwrap_err().message(),
                "unrecognized permission"
            );
        }
        assert_eq!(
            permission(255).unwrap_err().message(),
            "can not create another system admin"
        );
    }

    #[test]
    fn promotion_clears_replica_fields() {
        let replica = Replication {
            replica: true,
            primary_host: "p".into(),
            primary_port: 3322,
            prefetch_tx_buffer_size: 100,
            ..Default::default()
        };
        let promote = ReplicationNullableSettings {
            replica: Some(NullableBool { value: false }),
            ..Default::default()
        };
        let promoted = replica.merged(Some(&promote));
        assert_eq!(promoted, Replication::default());
        assert!(promoted.validate("db").is_ok());
    }

    #[test]
    fn primary_rules() {
        let sync_no_acks = Replication {
            sync_replication: true,
            ..Default::default()
        };
        assert!(sync_no_acks
            .validate("d")
            .unwrap_err()
            .message()
            .ends_with("It is necessary to have at least one sync replica"));
        let acks_no_sync = Replication {
            sync_acks: 1,
            ..Default::default()
        };
        assert!(acks_no_sync
            .validate("d")
            .unwrap_err()
            .message()
            .ends_with("SyncAcks should be set to 0"));
        let host_on_primary = Replication {
            primary_host: "x".into(),
            ..Default::default()
        };
        assert_eq!(
            host_on_primary.validate("d").unwrap_err().code(),
            Code::InvalidArgument
        );
    }
}

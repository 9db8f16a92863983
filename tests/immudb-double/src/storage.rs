//! A database's storage settings as immudb keeps them (the store part of `dbOptions`): defaults,
//! how a request changes them and the rules they must pass, with immudb's texts; `options` puts
//! them together with the replication settings in immudb's order. immudb stores an update at
//! once but a loaded database keeps running with the settings it was loaded with.

use tonic::Status;

use crate::proto::{
    DatabaseNullableSettings, NullableBool, NullableMilliseconds, NullableUint32,
    TruncationNullableSettings,
};
use crate::rules::{overwrite_error, validate_error};

const HOUR_MS: i64 = 3_600_000;
const MAX_KEY_LEN: u32 = 1024;
const MAX_FILE_SIZE: u32 = (1 << 31) - 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storage {
    pub sync_frequency_ms: i64,
    pub max_concurrency: u32,
    pub retention_period_ms: i64,
    pub truncation_frequency_ms: i64,
    pub file_size: u32,
    pub max_key_len: u32,
    pub max_value_len: u32,
    pub max_tx_entries: u32,
    pub embedded_values: bool,
    pub prealloc_files: bool,
}

/// immudb 1.10/1.11 server defaults for a new database.
impl Default for Storage {
    fn default() -> Self {
        Storage {
            sync_frequency_ms: 20,
            max_concurrency: 30,
            retention_period_ms: 0,
            truncation_frequency_ms: 24 * HOUR_MS,
            file_size: 1 << 29,
            max_key_len: 1024,
            max_value_len: 1 << 25,
            max_tx_entries: 1024,
            embedded_values: false,
            prealloc_files: false,
        }
    }
}

impl Storage {
    /// UpdateDatabaseV2 refuses every setting immudb fixes at creation, even with an unchanged
    /// value (immudb 1.11.1 pkg/server/db_options.go, `overwriteWith` with existentDB true).
    pub(crate) fn refuse_fixed(request: &DatabaseNullableSettings, db: &str) -> Result<(), Status> {
        let r = request;
        let fixed = [
            ("file size", r.file_size.is_some()),
            ("max key length", r.max_key_len.is_some()),
            ("max value length", r.max_value_len.is_some()),
            (
                "max number of entries per transaction",
                r.max_tx_entries.is_some(),
            ),
            ("embedded values", r.embedded_values.is_some()),
            ("prealloc files", r.prealloc_files.is_some()),
        ];
        match fixed.iter().find(|(_, set)| *set) {
            Some((name, _)) => Err(overwrite_error(format!(
                "{name} can not be changed after database creation ('{db}')"
            ))),
            None => Ok(()),
        }
    }

    /// The settings `request` sets, applied; the others keep their value (immudb 1.11.1
    /// pkg/server/db_options.go, `overwriteWith`, store part).
    pub(crate) fn overwritten(&self, r: &DatabaseNullableSettings) -> Storage {
        let mut next = self.clone();
        let count = |field: &Option<NullableUint32>, target: &mut u32| {
            if let Some(v) = field {
                *target = v.value;
            }
        };
        let ms = |field: &Option<NullableMilliseconds>, target: &mut i64| {
            if let Some(v) = field {
                *target = v.value;
            }
        };
        let flag = |field: &Option<NullableBool>, target: &mut bool| {
            if let Some(v) = field {
                *target = v.value;
            }
        };
        ms(&r.sync_frequency, &mut next.sync_frequency_ms);
        count(&r.max_concurrency, &mut next.max_concurrency);
        count(&r.file_size, &mut next.file_size);
        count(&r.max_key_len, &mut next.max_key_len);
        count(&r.max_value_len, &mut next.max_value_len);
        count(&r.max_tx_entries, &mut next.max_tx_entries);
        flag(&r.embedded_values, &mut next.embedded_values);
        flag(&r.prealloc_files, &mut next.prealloc_files);
        if let Some(t) = &r.truncation_settings {
            ms(&t.retention_period, &mut next.retention_period_ms);
            ms(&t.truncation_frequency, &mut next.truncation_frequency_ms);
        }
        next
    }

    /// The storage rules, after the replication rules: retention and truncation (immudb 1.11.1
    /// pkg/server/db_options.go, (*dbOptions).Validate), then the store's own options
    /// (embedded/store/options.go, (*Options).Validate), whose error is wrapped once.
    pub(crate) fn validate(&self, db: &str) -> Result<(), Status> {
        if self.retention_period_ms < 0
            || (self.retention_period_ms > 0 && self.retention_period_ms < 24 * HOUR_MS)
        {
            return Err(validate_error(format!(
                "invalid retention period for database '{db}'. RetentionPeriod should at least '24' hours"
            )));
        }
        if self.truncation_frequency_ms < 0
            || (self.truncation_frequency_ms > 0 && self.truncation_frequency_ms < HOUR_MS)
        {
            return Err(validate_error(format!(
                "invalid truncation frequency for database '{db}'. TruncationFrequency should at least '1' hour"
            )));
        }
        let invalid = [
            ("SyncFrequency", self.sync_frequency_ms < 0),
            ("MaxConcurrency", self.max_concurrency == 0),
            ("MaxTxEntries", self.max_tx_entries == 0),
            (
                "MaxKeyLen",
                self.max_key_len == 0 || self.max_key_len > MAX_KEY_LEN,
            ),
            ("MaxValueLen", self.max_value_len == 0),
            (
                "FileSize",
                self.file_size == 0 || self.file_size >= MAX_FILE_SIZE,
            ),
        ];
        if let Some((option, _)) = invalid.iter().find(|(_, bad)| *bad) {
            return Err(overwrite_error(format!(
                "invalid options: invalid {option}"
            )));
        }
        Ok(())
    }

    /// Writes every setting into `message`, as immudb answers.
    pub fn fill(&self, message: &mut DatabaseNullableSettings) {
        let count = |value| Some(NullableUint32 { value });
        let ms = |value| Some(NullableMilliseconds { value });
        let flag = |value| Some(NullableBool { value });
        message.sync_frequency = ms(self.sync_frequency_ms);
        message.max_concurrency = count(self.max_concurrency);
        message.file_size = count(self.file_size);
        message.max_key_len = count(self.max_key_len);
        message.max_value_len = count(self.max_value_len);
        message.max_tx_entries = count(self.max_tx_entries);
        message.embedded_values = flag(self.embedded_values);
        message.prealloc_files = flag(self.prealloc_files);
        message.truncation_settings = Some(TruncationNullableSettings {
            retention_period: ms(self.retention_period_ms),
            truncation_frequency: ms(self.truncation_frequency_ms),
        });
    }
}

//! A database's storage settings as immudb keeps them (`dbOptions`): defaults, the rules
//! CreateDatabaseV2 and UpdateDatabaseV2 apply, and the texts they answer with. immudb stores an
//! update at once but a loaded database keeps running with the settings it was loaded with.

use tonic::Status;

use crate::proto::{
    DatabaseNullableSettings, NullableBool, NullableMilliseconds, NullableUint32,
    TruncationNullableSettings,
};

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

/// immudb's InvalidArgument for a settings error raised directly by the server.
fn illegal(detail: String) -> Status {
    Status::invalid_argument(format!("illegal arguments: {detail}"))
}

/// The same for an error from its options validation, which immudb wraps twice.
fn illegal_wrapped(detail: String) -> Status {
    illegal(format!(
        "rpc error: code = InvalidArgument desc = illegal arguments: {detail}"
    ))
}

impl Storage {
    /// The settings after applying `request`; `existing` databases refuse every setting immudb
    /// fixes at creation, even with an unchanged value.
    pub fn merged(
        &self,
        request: Option<&DatabaseNullableSettings>,
        existing: bool,
        db: &str,
    ) -> Result<Storage, Status> {
        let mut next = self.clone();
        let Some(r) = request else {
            return Ok(next);
        };
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
        if existing {
            if let Some((name, _)) = fixed.iter().find(|(_, set)| *set) {
                return Err(illegal(format!(
                    "{name} can not be changed after database creation ('{db}')"
                )));
            }
        }
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
        next.validate(db)?;
        Ok(next)
    }

    fn validate(&self, db: &str) -> Result<(), Status> {
        if self.retention_period_ms < 0
            || (self.retention_period_ms > 0 && self.retention_period_ms < 24 * HOUR_MS)
        {
            return Err(illegal_wrapped(format!(
                "invalid retention period for database '{db}'. RetentionPeriod should at least '24' hours"
            )));
        }
        if self.truncation_frequency_ms < 0
            || (self.truncation_frequency_ms > 0 && self.truncation_frequency_ms < HOUR_MS)
        {
            return Err(illegal_wrapped(format!(
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
            return Err(illegal(format!("invalid options: invalid {option}")));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_settings_are_refused_on_an_existing_database_even_unchanged() {
        let request = DatabaseNullableSettings {
            file_size: Some(NullableUint32 { value: 1 << 29 }),
            ..Default::default()
        };
        let err = Storage::default()
            .merged(Some(&request), true, "db")
            .unwrap_err();
        assert_eq!(
            err.message(),
            "illegal arguments: file size can not be changed after database creation ('db')"
        );
        assert!(Storage::default()
            .merged(Some(&request), false, "db")
            .is_ok());
    }

    #[test]
    fn retention_below_a_day_is_refused() {
        let request = DatabaseNullableSettings {
            truncation_settings: Some(TruncationNullableSettings {
                retention_period: Some(NullableMilliseconds { value: HOUR_MS }),
                truncation_frequency: None,
            }),
            ..Default::default()
        };
        let err = Storage::default()
            .merged(Some(&request), false, "db")
            .unwrap_err();
        assert!(err
            .message()
            .ends_with("RetentionPeriod should at least '24' hours"));
    }
}

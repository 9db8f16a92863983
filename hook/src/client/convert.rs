//! Settings ↔ immudb's nullable protobuf messages. Unset means "unchanged" to immudb, so what is
//! sent is exactly what the plan decided to change. Pure, so a test can put every request the
//! hook sends through the double's copy of immudb's settings rules.

use crate::plan::{Action, ObservedDatabase};
use crate::proto::{
    self, NullableBool, NullableMilliseconds, NullableString, NullableUint32,
    ReplicationNullableSettings, TruncationNullableSettings,
};
use crate::types::{ReplicationSettings, Secret, Setting, StorageSettings};

/// What an action that changes a database's settings sends. No Debug: a replica's settings carry
/// the replication password.
pub enum SettingsRequest {
    Create(proto::CreateDatabaseRequest),
    Update(proto::UpdateDatabaseRequest),
}

/// The request `action` sends, None for an action that changes no settings. A create carries
/// ifNotExists: a database that appeared meanwhile is reconciled by the next plan.
pub fn settings_request(action: &Action) -> Option<SettingsRequest> {
    match action {
        Action::CreateDatabase {
            name,
            replication,
            storage,
        } => Some(SettingsRequest::Create(proto::CreateDatabaseRequest {
            name: name.clone(),
            settings: Some(settings_to_proto(Some(replication), storage)),
            if_not_exists: true,
        })),
        Action::UpdateDatabase {
            name,
            replication,
            storage,
        } => Some(SettingsRequest::Update(update_request(
            name,
            replication.as_ref(),
            storage,
        ))),
        _ => None,
    }
}

pub fn update_request(
    name: &str,
    replication: Option<&ReplicationSettings>,
    storage: &StorageSettings,
) -> proto::UpdateDatabaseRequest {
    proto::UpdateDatabaseRequest {
        database: name.to_string(),
        settings: Some(settings_to_proto(replication, storage)),
    }
}

/// One database as DatabaseListV2 reports it.
pub fn observed_database(info: proto::DatabaseInfo) -> ObservedDatabase {
    ObservedDatabase {
        replication: replication_from_proto(info.settings.as_ref()),
        storage: storage_from_proto(info.settings.as_ref()),
        name: info.name,
        loaded: info.loaded,
        tx_count: info.num_transactions,
    }
}

fn bool_(value: bool) -> Option<NullableBool> {
    Some(NullableBool { value })
}
fn u32_(value: u32) -> Option<NullableUint32> {
    Some(NullableUint32 { value })
}
fn string(value: &str) -> Option<NullableString> {
    Some(NullableString {
        value: value.to_string(),
    })
}

/// Every replication field is sent explicitly: explicit zero values are accepted on a primary.
pub fn replication_to_proto(s: &ReplicationSettings) -> ReplicationNullableSettings {
    ReplicationNullableSettings {
        replica: bool_(s.replica),
        primary_database: string(&s.primary_database),
        primary_host: string(&s.primary_host),
        primary_port: u32_(s.primary_port),
        primary_username: string(&s.primary_username),
        primary_password: string(s.primary_password.expose()),
        sync_replication: bool_(s.sync_replication),
        sync_acks: u32_(s.sync_acks),
        prefetch_tx_buffer_size: u32_(s.prefetch_tx_buffer_size),
        replication_commit_concurrency: u32_(s.replication_commit_concurrency),
        allow_tx_discarding: bool_(s.allow_tx_discarding),
        skip_integrity_check: bool_(s.skip_integrity_check),
        wait_for_indexing: bool_(s.wait_for_indexing),
    }
}

/// The settings message for a create or an update: the replication settings when given, and
/// exactly the storage settings in `storage`.
pub fn settings_to_proto(
    replication: Option<&ReplicationSettings>,
    storage: &StorageSettings,
) -> proto::DatabaseNullableSettings {
    let mut message = proto::DatabaseNullableSettings {
        replication_settings: replication.map(replication_to_proto),
        ..Default::default()
    };
    for (setting, value) in storage.iter() {
        // Values were range-checked against u32 when the spec was read.
        let count = || u32_(u32::try_from(value).unwrap_or(u32::MAX));
        let ms = || {
            Some(NullableMilliseconds {
                value: i64::try_from(value).unwrap_or(i64::MAX),
            })
        };
        let truncation = message
            .truncation_settings
            .get_or_insert_with(TruncationNullableSettings::default);
        match setting {
            Setting::SyncFrequency => message.sync_frequency = ms(),
            Setting::RetentionPeriod => truncation.retention_period = ms(),
            Setting::TruncationFrequency => truncation.truncation_frequency = ms(),
            Setting::MaxConcurrency => message.max_concurrency = count(),
            Setting::FileSize => message.file_size = count(),
            Setting::MaxKeyLen => message.max_key_len = count(),
            Setting::MaxValueLen => message.max_value_len = count(),
            Setting::MaxTxEntries => message.max_tx_entries = count(),
            Setting::EmbeddedValues => message.embedded_values = bool_(value != 0),
            Setting::PreallocFiles => message.prealloc_files = bool_(value != 0),
        }
    }
    if message
        .truncation_settings
        .as_ref()
        .is_some_and(|t| t.retention_period.is_none() && t.truncation_frequency.is_none())
    {
        message.truncation_settings = None;
    }
    message
}

pub fn replication_from_proto(
    settings: Option<&proto::DatabaseNullableSettings>,
) -> ReplicationSettings {
    let r = settings
        .and_then(|s| s.replication_settings.clone())
        .unwrap_or_default();
    let b = |v: Option<NullableBool>| v.is_some_and(|v| v.value);
    let n = |v: Option<NullableUint32>| v.map_or(0, |v| v.value);
    let s = |v: Option<NullableString>| v.map(|v| v.value).unwrap_or_default();
    ReplicationSettings {
        replica: b(r.replica),
        primary_database: s(r.primary_database),
        primary_host: s(r.primary_host),
        primary_port: n(r.primary_port),
        primary_username: s(r.primary_username),
        primary_password: Secret::new(s(r.primary_password)),
        sync_replication: b(r.sync_replication),
        sync_acks: n(r.sync_acks),
        prefetch_tx_buffer_size: n(r.prefetch_tx_buffer_size),
        replication_commit_concurrency: n(r.replication_commit_concurrency),
        allow_tx_discarding: b(r.allow_tx_discarding),
        skip_integrity_check: b(r.skip_integrity_check),
        wait_for_indexing: b(r.wait_for_indexing),
    }
}

/// Every storage setting the server reported.
pub fn storage_from_proto(settings: Option<&proto::DatabaseNullableSettings>) -> StorageSettings {
    let Some(s) = settings else {
        return StorageSettings::default();
    };
    let truncation = s.truncation_settings.unwrap_or_default();
    let ms = |v: Option<NullableMilliseconds>| v.map(|v| u64::try_from(v.value).unwrap_or(0));
    let count = |v: Option<NullableUint32>| v.map(|v| u64::from(v.value));
    let flag = |v: Option<NullableBool>| v.map(|v| u64::from(v.value));
    Setting::ALL
        .into_iter()
        .filter_map(|setting| {
            let value = match setting {
                Setting::SyncFrequency => ms(s.sync_frequency),
                Setting::RetentionPeriod => ms(truncation.retention_period),
                Setting::TruncationFrequency => ms(truncation.truncation_frequency),
                Setting::MaxConcurrency => count(s.max_concurrency),
                Setting::FileSize => count(s.file_size),
                Setting::MaxKeyLen => count(s.max_key_len),
                Setting::MaxValueLen => count(s.max_value_len),
                Setting::MaxTxEntries => count(s.max_tx_entries),
                Setting::EmbeddedValues => flag(s.embedded_values),
                Setting::PreallocFiles => flag(s.prealloc_files),
            };
            value.map(|v| (setting, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::settings::Kind;

    #[test]
    fn replication_settings_survive_the_round_trip() {
        let settings = ReplicationSettings {
            replica: true,
            primary_database: "a".into(),
            primary_host: "p".into(),
            primary_port: 3322,
            primary_username: "r".into(),
            primary_password: Secret::new("pw"),
            sync_replication: true,
            prefetch_tx_buffer_size: 100,
            replication_commit_concurrency: 10,
            wait_for_indexing: true,
            ..Default::default()
        };
        let message = settings_to_proto(Some(&settings), &StorageSettings::default());
        assert_eq!(replication_from_proto(Some(&message)), settings);
    }

    #[test]
    fn storage_settings_survive_the_round_trip_and_only_they_are_sent() {
        let storage: StorageSettings = Setting::ALL
            .into_iter()
            .map(|s| {
                (
                    s,
                    if s.kind() == Kind::Flag {
                        1
                    } else {
                        86_400_000
                    },
                )
            })
            .collect();
        let message = settings_to_proto(None, &storage);
        assert!(message.replication_settings.is_none());
        assert_eq!(storage_from_proto(Some(&message)), storage);

        let only_sync: StorageSettings = [(Setting::SyncFrequency, 1)].into_iter().collect();
        let message = settings_to_proto(None, &only_sync);
        assert_eq!(message.sync_frequency.unwrap().value, 1);
        assert!(message.file_size.is_none() && message.truncation_settings.is_none());
    }
}

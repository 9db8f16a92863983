//! immudb 1.11.1's `overwriteWith` and `Validate` (pkg/server/db_options.go), rule by rule, each
//! with the text a client receives.

use tonic::Code;

use super::*;
use crate::proto::{NullableMilliseconds, TruncationNullableSettings};

const DOUBLED: &str =
    "illegal arguments: rpc error: code = InvalidArgument desc = illegal arguments: ";

fn flag(value: bool) -> Option<NullableBool> {
    Some(NullableBool { value })
}

fn number(value: u32) -> Option<NullableUint32> {
    Some(NullableUint32 { value })
}

fn text(value: &str) -> Option<NullableString> {
    Some(NullableString {
        value: value.into(),
    })
}

fn with_replication(request: ReplicationNullableSettings) -> DatabaseNullableSettings {
    DatabaseNullableSettings {
        replication_settings: Some(request),
        ..Default::default()
    }
}

fn create(request: ReplicationNullableSettings) -> Result<DbOptions, Status> {
    DbOptions::created("db", Some(&with_replication(request)))
}

fn update(stored: &DbOptions, request: ReplicationNullableSettings) -> Result<DbOptions, Status> {
    stored.updated("db", Some(&with_replication(request)))
}

/// The refusal's code and text.
fn refused(result: Result<DbOptions, Status>) -> (Code, String) {
    let status = result.expect_err("immudb refuses this");
    (status.code(), status.message().to_string())
}

fn invalid(detail: &str) -> (Code, String) {
    (Code::InvalidArgument, format!("{DOUBLED}{detail}"))
}

/// A replica of `primary` as the hook creates one.
fn replica_request() -> ReplicationNullableSettings {
    ReplicationNullableSettings {
        replica: flag(true),
        primary_database: text("db"),
        primary_host: text("primary"),
        primary_port: number(3322),
        primary_username: text("replicator"),
        primary_password: text("pw"),
        prefetch_tx_buffer_size: number(300),
        replication_commit_concurrency: number(30),
        ..Default::default()
    }
}

fn sync_primary() -> DbOptions {
    create(ReplicationNullableSettings {
        sync_replication: flag(true),
        sync_acks: number(1),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn a_replica_needs_a_prefetch_buffer_even_when_it_follows_nobody() {
    // What the hook's fence sent on a real immudb 1.11.1, refused there.
    let fence = ReplicationNullableSettings {
        replica: flag(true),
        sync_replication: flag(true),
        prefetch_tx_buffer_size: number(0),
        replication_commit_concurrency: number(0),
        primary_host: text(""),
        ..Default::default()
    };
    assert_eq!(
        refused(update(&sync_primary(), fence)),
        invalid(
            "invalid value for replication option PrefetchTxBufferSize on replica database 'db'"
        )
    );
}

#[test]
fn a_replica_needs_a_commit_concurrency() {
    let request = ReplicationNullableSettings {
        replication_commit_concurrency: number(0),
        ..replica_request()
    };
    assert_eq!(
        refused(create(request)),
        invalid(
            "invalid value for replication option ReplicationCommitConcurrency on replica database 'db'"
        )
    );
}

#[test]
fn a_replica_acknowledges_nothing() {
    let request = ReplicationNullableSettings {
        sync_acks: number(1),
        ..replica_request()
    };
    assert_eq!(
        refused(create(request)),
        invalid(
            "invalid value for replication option SyncAcks ReplicationCommitConcurrency on database 'db'"
        )
    );
}

#[test]
fn a_primary_carries_none_of_a_replicas_settings() {
    type Set = fn(&mut ReplicationNullableSettings);
    let cases: [(&str, Set); 10] = [
        ("PrimaryDatabase", |r| r.primary_database = text("x")),
        ("PrimaryHost", |r| r.primary_host = text("x")),
        ("PrimaryPort", |r| r.primary_port = number(1)),
        ("PrimaryUsername", |r| r.primary_username = text("x")),
        ("PrimaryPassword", |r| r.primary_password = text("x")),
        ("PrefetchTxBufferSize", |r| {
            r.prefetch_tx_buffer_size = number(1)
        }),
        ("ReplicationCommitConcurrency", |r| {
            r.replication_commit_concurrency = number(1)
        }),
        ("AllowTxDiscarding", |r| r.allow_tx_discarding = flag(true)),
        ("SkipIntegrityCheck", |r| {
            r.skip_integrity_check = flag(true)
        }),
        ("WaitForIndexing", |r| r.wait_for_indexing = flag(true)),
    ];
    for (field, set) in cases {
        let mut request = ReplicationNullableSettings {
            replica: flag(false),
            ..Default::default()
        };
        set(&mut request);
        assert_eq!(
            refused(create(request)),
            invalid(&format!(
                "invalid value for replication option {field} on primary database 'db'"
            )),
            "{field}"
        );
    }
    // Explicit zeros and falses are no values.
    let zeros = Replication::default().to_nullable();
    assert_eq!(create(zeros).unwrap(), DbOptions::default());
}

#[test]
fn a_synchronous_primary_needs_acknowledgements_and_acknowledgements_need_sync() {
    let sync_without_acks = ReplicationNullableSettings {
        sync_replication: flag(true),
        ..Default::default()
    };
    assert_eq!(
        refused(create(sync_without_acks)),
        invalid("invalid replication options for primary database 'db'. It is necessary to have at least one sync replica")
    );
    let acks_without_sync = ReplicationNullableSettings {
        sync_acks: number(2),
        ..Default::default()
    };
    assert_eq!(
        refused(create(acks_without_sync)),
        invalid(
            "invalid replication options for primary database 'db'. SyncAcks should be set to 0"
        )
    );
}

#[test]
fn a_new_replica_gets_immudbs_replicator_defaults() {
    let external = create(ReplicationNullableSettings {
        replica: flag(true),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        external.replication,
        Replication {
            replica: true,
            prefetch_tx_buffer_size: DEFAULT_PREFETCH_TX_BUFFER_SIZE,
            replication_commit_concurrency: DEFAULT_REPLICATION_COMMIT_CONCURRENCY,
            ..Default::default()
        }
    );
}

#[test]
fn turning_a_synchronous_primary_into_a_replica_drops_its_acks_and_keeps_sync() {
    let replica = update(
        &sync_primary(),
        ReplicationNullableSettings {
            replica: flag(true),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        replica.replication,
        Replication {
            replica: true,
            sync_replication: true,
            sync_acks: 0,
            prefetch_tx_buffer_size: DEFAULT_PREFETCH_TX_BUFFER_SIZE,
            replication_commit_concurrency: DEFAULT_REPLICATION_COMMIT_CONCURRENCY,
            ..Default::default()
        }
    );
    // Back with only replica=false: sync stays on, acks stay 0, and immudb refuses it.
    assert_eq!(
        refused(update(
            &replica,
            ReplicationNullableSettings {
                replica: flag(false),
                ..Default::default()
            }
        )),
        invalid("invalid replication options for primary database 'db'. It is necessary to have at least one sync replica")
    );
}

#[test]
fn unset_fields_of_a_replica_keep_their_values() {
    let replica = create(ReplicationNullableSettings {
        allow_tx_discarding: flag(true),
        skip_integrity_check: flag(true),
        wait_for_indexing: flag(true),
        sync_replication: flag(true),
        ..replica_request()
    })
    .unwrap();
    let touched = update(
        &replica,
        ReplicationNullableSettings {
            primary_password: text("new"),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        touched.replication,
        Replication {
            primary_password: "new".into(),
            ..replica.replication
        }
    );
}

#[test]
fn promotion_with_only_replica_false_clears_the_primary_address_and_the_replicator_tuning() {
    let replica = create(replica_request()).unwrap();
    let promoted = update(
        &replica,
        ReplicationNullableSettings {
            replica: flag(false),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(promoted, DbOptions::default());
}

#[test]
fn promotion_with_only_replica_false_keeps_allow_tx_discarding_and_is_refused() {
    type Set = fn(&mut ReplicationNullableSettings);
    let cases: [(&str, Set); 3] = [
        ("AllowTxDiscarding", |r| r.allow_tx_discarding = flag(true)),
        ("SkipIntegrityCheck", |r| {
            r.skip_integrity_check = flag(true)
        }),
        ("WaitForIndexing", |r| r.wait_for_indexing = flag(true)),
    ];
    for (field, set) in cases {
        let mut request = replica_request();
        set(&mut request);
        let replica = create(request).unwrap();
        let promote = ReplicationNullableSettings {
            replica: flag(false),
            ..Default::default()
        };
        assert_eq!(
            refused(update(&replica, promote)),
            invalid(&format!(
                "invalid value for replication option {field} on primary database 'db'"
            ))
        );
    }
}

#[test]
fn a_request_without_replication_settings_leaves_them_and_still_validates_storage() {
    let replica = create(replica_request()).unwrap();
    let storage_only = DatabaseNullableSettings {
        sync_frequency: Some(NullableMilliseconds { value: 1 }),
        ..Default::default()
    };
    let updated = replica.updated("db", Some(&storage_only)).unwrap();
    assert_eq!(updated.replication, replica.replication);
    assert_eq!(updated.storage.sync_frequency_ms, 1);
}

#[test]
fn fixed_settings_are_refused_on_an_existing_database_even_unchanged_before_anything_else() {
    let request = DatabaseNullableSettings {
        file_size: Some(NullableUint32 { value: 1 << 29 }),
        // Also an invalid replication request: the fixed setting is refused first.
        replication_settings: Some(ReplicationNullableSettings {
            sync_acks: number(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        refused(DbOptions::default().updated("db", Some(&request))),
        (
            Code::InvalidArgument,
            "illegal arguments: file size can not be changed after database creation ('db')"
                .to_string()
        )
    );
    let fixed_only = DatabaseNullableSettings {
        file_size: Some(NullableUint32 { value: 1 << 29 }),
        ..Default::default()
    };
    assert!(DbOptions::created("db", Some(&fixed_only)).is_ok());
}

fn truncation(retention_ms: Option<i64>, frequency_ms: Option<i64>) -> DatabaseNullableSettings {
    let ms = |v: Option<i64>| v.map(|value| NullableMilliseconds { value });
    DatabaseNullableSettings {
        truncation_settings: Some(TruncationNullableSettings {
            retention_period: ms(retention_ms),
            truncation_frequency: ms(frequency_ms),
        }),
        ..Default::default()
    }
}

#[test]
fn retention_below_a_day_and_truncation_below_an_hour_are_refused() {
    const HOUR: i64 = 3_600_000;
    assert_eq!(
        refused(DbOptions::created("db", Some(&truncation(Some(HOUR), None)))),
        invalid("invalid retention period for database 'db'. RetentionPeriod should at least '24' hours")
    );
    assert_eq!(
        refused(DbOptions::created("db", Some(&truncation(None, Some(HOUR - 1))))),
        invalid("invalid truncation frequency for database 'db'. TruncationFrequency should at least '1' hour")
    );
    assert!(DbOptions::created("db", Some(&truncation(Some(24 * HOUR), Some(HOUR)))).is_ok());
    assert!(DbOptions::created("db", Some(&truncation(Some(0), None))).is_ok());
}

#[test]
fn replication_rules_come_before_storage_rules_and_store_options_last() {
    let mut request = truncation(Some(1), None);
    request.replication_settings = Some(ReplicationNullableSettings {
        sync_acks: number(1),
        ..Default::default()
    });
    assert_eq!(
        refused(DbOptions::created("db", Some(&request))),
        invalid(
            "invalid replication options for primary database 'db'. SyncAcks should be set to 0"
        )
    );
    let no_concurrency = DatabaseNullableSettings {
        max_concurrency: number(0),
        ..truncation(Some(1), None)
    };
    assert!(refused(DbOptions::created("db", Some(&no_concurrency)))
        .1
        .contains("RetentionPeriod"));
    let no_concurrency = DatabaseNullableSettings {
        max_concurrency: number(0),
        ..Default::default()
    };
    assert_eq!(
        refused(DbOptions::created("db", Some(&no_concurrency))),
        (
            Code::InvalidArgument,
            "illegal arguments: invalid options: invalid MaxConcurrency".to_string()
        )
    );
}

#[test]
fn the_answer_carries_every_field() {
    let replica = create(replica_request()).unwrap();
    let answer = replica.to_nullable();
    let back = DbOptions::default()
        .updated(
            "db",
            Some(&DatabaseNullableSettings {
                replication_settings: answer.replication_settings.clone(),
                sync_frequency: answer.sync_frequency,
                max_concurrency: answer.max_concurrency,
                truncation_settings: answer.truncation_settings,
                ..Default::default()
            }),
        )
        .unwrap();
    assert_eq!(back, replica);
}

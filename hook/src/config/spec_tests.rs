//! Spec validation: overrides, and every rejected value named with its key and rule.

use super::*;

fn spec(json: serde_json::Value) -> Spec {
    serde_json::from_value(json).expect("a well-formed spec")
}

fn desired(json: serde_json::Value, replicas: usize) -> Result<Desired, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "pw").unwrap();
    spec(json).desired(Context {
        replica_count: replicas,
        primary_host_for_replicas: "p".into(),
        replication_password_file: Some(&password),
        dials: true,
    })
}

fn replication(json: serde_json::Value) -> DatabaseReplication {
    match desired(json, 2).unwrap() {
        Desired::Database(spec) => spec,
        Desired::Systemdb { .. } => panic!("database mode expected"),
    }
}

#[test]
fn per_database_settings_override_the_defaults() {
    let r = replication(serde_json::json!({
        "databases": ["a", {"name": "b", "settings": {"syncFrequency": "20ms", "fileSize": null}}],
        "settings": {"syncFrequency": "1ms", "maxConcurrency": 30, "embeddedValues": true},
    }));
    let a = &r.databases[0].storage;
    let b = &r.databases[1].storage;
    assert_eq!(a.get(Setting::SyncFrequency), Some(1));
    assert_eq!(b.get(Setting::SyncFrequency), Some(20));
    assert_eq!(b.get(Setting::EmbeddedValues), Some(1));
    assert_eq!(b.get(Setting::FileSize), None, "null leaves it unmanaged");
    assert_eq!(r.options.replication_commit_concurrency, 30);
    assert_eq!(r.apply_settings, ApplySettings::OnReload);
}

#[test]
fn bad_settings_name_the_key_and_the_rule() {
    let cases = [
        (
            serde_json::json!({"settings": {"syncFrequency": "5"}}),
            "settings.syncFrequency",
            "one unit",
        ),
        (
            serde_json::json!({"settings": {"retentionPeriod": "2h"}}),
            "settings.retentionPeriod",
            "at least 24h",
        ),
        (
            serde_json::json!({"settings": {"maxKeyLen": 4096}}),
            "settings.maxKeyLen",
            "between 1 and 1024",
        ),
        (
            serde_json::json!({"settings": {"fileSizes": 1}}),
            "settings.fileSizes",
            "unknown setting",
        ),
        (
            serde_json::json!({"settings": {"preallocFiles": "yes"}}),
            "settings.preallocFiles",
            "true or false",
        ),
        (
            serde_json::json!({"databases": [{"name": "a", "settings": {"maxConcurrency": 0}}]}),
            "databases[a].settings.maxConcurrency",
            "between 1 and",
        ),
        (
            serde_json::json!({"settings": {"maxConcurrency": 20}, "replication": {"commitConcurrency": 25}}),
            "replication.commitConcurrency",
            "exceeds maxConcurrency 20 of database 'appdb'",
        ),
        (
            serde_json::json!({"replication": {"commitConcurrency": 31}}),
            "replication.commitConcurrency",
            "max concurrency limit exceeded",
        ),
    ];
    for (mut json, key, rule) in cases {
        if json.get("databases").is_none() {
            json["databases"] = serde_json::json!(["appdb"]);
        }
        let error = desired(json.clone(), 2).unwrap_err().to_string();
        assert!(
            error.contains(key) && error.contains(rule),
            "{json}: {error}"
        );
    }
}

#[test]
fn unknown_keys_are_refused_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.json");
    std::fs::write(&path, r#"{"databases": ["a"], "replicaton": {}}"#).unwrap();
    let error = Spec::read(&path).unwrap_err().to_string();
    assert!(
        error.contains("--spec-file") && error.contains("unknown field `replicaton`"),
        "{error}"
    );
}

//! Database settings from the spec reach every node, changes are stored and applied as asked, and
//! settings immudb fixes at creation are refused before anything changes.

mod common;

use common::*;
use immudb_double::storage::Storage;
use immudb_hook::client::Client;
use immudb_hook::plan::Setting;
use immudb_hook::reconcile::converge;
use immudb_hook::report::{Failure, Outcome};
use immudb_hook::types::{Credentials, Secret};
use serde_json::json;

fn spec(settings: serde_json::Value, apply: &str) -> serde_json::Value {
    json!({
        "databases": ["appdb", {"name": "audit", "settings": {"syncFrequency": "20ms"}}],
        "settings": settings,
        "applySettings": apply,
    })
}

#[tokio::test]
async fn settings_reach_every_node_and_read_back_through_get_database_settings() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 2).await;
    let settings = json!({"syncFrequency": "1ms", "maxConcurrency": 40, "fileSize": 1048576,
        "embeddedValues": true, "retentionPeriod": "7d", "truncationFrequency": "1h"});
    let report = converge(&cluster.converge_config(
        &cluster.replica_hosts(2),
        20,
        spec(settings, "onReload"),
        &[],
    ))
    .await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let admin = Credentials {
        user: "immudb".into(),
        password: Secret::new(ADMIN_PASSWORD),
    };
    for node in &nodes {
        let session = Client::new(&target(node))
            .unwrap()
            .open_session(&admin, "appdb")
            .await
            .unwrap();
        let stored = session.database_settings().await.unwrap();
        session.close_session().await.unwrap();
        assert_eq!(stored.get(Setting::SyncFrequency), Some(1));
        assert_eq!(stored.get(Setting::MaxConcurrency), Some(40));
        assert_eq!(stored.get(Setting::FileSize), Some(1 << 20));
        assert_eq!(stored.get(Setting::EmbeddedValues), Some(1));
        assert_eq!(stored.get(Setting::RetentionPeriod), Some(7 * 86_400_000));
        assert_eq!(stored.get(Setting::TruncationFrequency), Some(3_600_000));
        node.with_state(|s| {
            assert_eq!(
                s.databases["audit"].effective.sync_frequency_ms, 20,
                "the override"
            );
            assert_eq!(
                s.databases["appdb"].effective.sync_frequency_ms, 1,
                "in effect at creation"
            );
        });
    }
}

#[tokio::test]
async fn on_reload_stores_changes_and_says_they_wait_for_a_restart() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    let replicas = cluster.replica_hosts(1);
    let first =
        converge(&cluster.converge_config(&replicas, 20, spec(json!({}), "onReload"), &[])).await;
    assert_eq!(first.exit_code(), 0, "{first}");

    let changed = spec(json!({"syncFrequency": "1ms"}), "onReload");
    let report = converge(&cluster.converge_config(&replicas, 20, changed.clone(), &[])).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    for host in [cluster.host(0), cluster.host(1)] {
        assert_eq!(
            outcomes(&report, &host),
            vec![Outcome::UpdatedPendingReload, Outcome::Unchanged],
            "{report}"
        );
    }
    assert!(
        report
            .verdict()
            .contains("2 database(s) hold new settings that take effect at their next restart"),
        "{}",
        report.verdict()
    );
    for node in &nodes {
        node.with_state(|s| {
            let db = &s.databases["appdb"];
            assert_eq!(
                (
                    db.settings.sync_frequency_ms,
                    db.effective.sync_frequency_ms
                ),
                (1, 20)
            );
            assert!(db.last_loaded.is_none(), "onReload never reloads");
        });
    }
    let again = converge(&cluster.converge_config(&replicas, 20, changed, &[])).await;
    assert!(again.verdict().contains("already converged"), "{again}");
}

#[tokio::test]
async fn immediately_reloads_replicas_one_by_one_then_the_primary() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 2).await;
    let replicas = cluster.replica_hosts(2);
    let first =
        converge(&cluster.converge_config(&replicas, 20, spec(json!({}), "immediately"), &[]))
            .await;
    assert_eq!(first.exit_code(), 0, "{first}");
    assert!(
        nodes[0].with_state(|s| s.databases["appdb"].last_loaded.is_none()),
        "creation needs no reload"
    );

    let report = converge(&cluster.converge_config(
        &replicas,
        20,
        spec(json!({"syncFrequency": "1ms"}), "immediately"),
        &[],
    ))
    .await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        outcomes(&report, &cluster.host(0)),
        vec![Outcome::Reloaded, Outcome::Unchanged]
    );
    let loaded_at: Vec<_> = nodes
        .iter()
        .map(|n| {
            n.with_state(|s| {
                let db = &s.databases["appdb"];
                assert_eq!(db.effective.sync_frequency_ms, 1);
                assert!(db.loaded);
                db.last_loaded.unwrap()
            })
        })
        .collect();
    assert!(
        loaded_at[1] < loaded_at[0] && loaded_at[2] < loaded_at[0],
        "the primary reloads last"
    );
    assert!(
        report
            .verdict()
            .contains("3 database(s) reloaded to apply new settings"),
        "{report}"
    );
}

#[tokio::test]
async fn a_fixed_setting_that_differs_is_refused_and_nothing_changes() {
    let cluster = Cluster::new();
    let nodes = start_all(&cluster, 1).await;
    let replicas = cluster.replica_hosts(1);
    let first = converge(&cluster.converge_config(
        &replicas,
        20,
        spec(json!({"fileSize": 1048576}), "onReload"),
        &[],
    ))
    .await;
    assert_eq!(first.exit_code(), 0, "{first}");

    let report = converge(&cluster.converge_config(
        &replicas,
        20,
        spec(
            json!({"fileSize": 2097152, "syncFrequency": "1ms"}),
            "onReload",
        ),
        &[],
    ))
    .await;
    assert_eq!(report.exit_code(), 5, "{report}");
    let reason = report
        .failures()
        .map(|(line, _)| line.outcome.to_string())
        .next()
        .unwrap();
    assert!(
        reason.contains("database 'appdb': fileSize is 1048576 but 2097152 is asked for"),
        "{reason}"
    );
    assert!(report.failures().any(|(_, f)| f == Failure::Rejected));
    for node in &nodes {
        node.with_state(|s| {
            let db = &s.databases["appdb"];
            assert_eq!(db.settings.file_size, 1 << 20);
            assert_eq!(
                db.settings.sync_frequency_ms,
                Storage::default().sync_frequency_ms,
                "not half-applied"
            );
        });
    }
}

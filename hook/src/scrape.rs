//! Reading immudb's own `/metrics` (Prometheus text format): one gauge per database, as the agent
//! and the Job read the replicators each replica runs.

use std::collections::BTreeMap;

/// immudb's gauge of running replicators per replica database (its commit concurrency; 0 stopped).
pub const REPLICATORS: &str = "immudb_replication_replicators";

/// `name{db="x",...} value` lines of `text` → value per database. Other labels are ignored.
pub fn gauge_by_database(text: &str, name: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once('}')?;
            let db = labels.split(',').find_map(|label| {
                let quoted = label.trim().strip_prefix("db=")?;
                Some(quoted.trim_matches('"').to_string())
            })?;
            let value: f64 = value.split_whitespace().next()?.parse().ok()?;
            Some((db, value.max(0.0) as u64))
        })
        .collect()
}

/// Fetches `url` (an immudb `/metrics`) and reads `name` per database.
pub async fn scrape_gauge(
    http: &reqwest::Client,
    url: &str,
    name: &str,
) -> Result<BTreeMap<String, u64>, String> {
    let text = async { http.get(url).send().await?.error_for_status()?.text().await }
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(gauge_by_database(&text, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_per_database() {
        let text = "# HELP immudb_replication_replicators x\n\
            # TYPE immudb_replication_replicators gauge\n\
            immudb_replication_replicators{db=\"appdb\"} 30\n\
            immudb_replication_replicators{db=\"audit\"} 0\n\
            immudb_replication_replicators_active{db=\"appdb\"} 3\n\
            immudb_last_committed_trx_id{db=\"appdb\",index=\"index_00\"} 1.234e+03\n";
        let replicators = gauge_by_database(text, "immudb_replication_replicators");
        assert_eq!(
            replicators,
            BTreeMap::from([("appdb".into(), 30), ("audit".into(), 0)])
        );
        let committed = gauge_by_database(text, "immudb_last_committed_trx_id");
        assert_eq!(committed, BTreeMap::from([("appdb".into(), 1234)]));
    }
}

//! Before a database is created on the primary: do replicas still hold transactions of it? Then
//! the primary lost it (a new volume), and creating it empty would let writers diverge from the
//! replicas' history; it must be rebuilt from a replica instead (`rebuild-primary`). Asked only
//! when a create is planned, of every replica that answers within a few seconds.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;

use crate::client::RpcError;
use crate::config::Topology;
use crate::link::Link;
use crate::session::Logins;
use crate::types::Credentials;

const ASK_TIMEOUT: Duration = Duration::from_secs(5);

async fn transactions_on(
    topology: &Topology,
    admin: &Credentials,
    host: &str,
    logins: &Logins,
) -> Result<BTreeMap<String, u64>, RpcError> {
    let mut link = Link::resolving(host, topology, logins);
    let databases = link
        .call(admin, &["defaultdb".to_string()], |c| async move {
            c.list_databases().await
        })
        .await;
    link.close().await;
    // Only replica databases carry the primary's history; a writable one is another matter.
    Ok(databases?
        .into_iter()
        .filter(|db| db.replication.replica)
        .map(|db| (db.name, db.tx_count))
        .collect())
}

/// For each of `databases` that some replica holds transactions of: that replica and its count.
/// The logins it makes (one per replica) count into `logins`.
pub async fn held_by_replicas(
    topology: &Topology,
    admin: &Credentials,
    databases: &[String],
    logins: &Logins,
) -> BTreeMap<String, (String, u64)> {
    let asks = topology.replicas.iter().map(|host| async move {
        let asked = transactions_on(topology, admin, host, logins);
        let answer = tokio::time::timeout(ASK_TIMEOUT, asked).await;
        match answer {
            Ok(Ok(counts)) => Some((host.clone(), counts)),
            Ok(Err(error)) => {
                tracing::info!(replica = %host, %error, "could not ask the replica what it holds");
                None
            }
            Err(_) => None,
        }
    });
    let mut held = BTreeMap::new();
    for (host, counts) in join_all(asks).await.into_iter().flatten() {
        for database in databases {
            if let Some(&tx) = counts.get(database).filter(|tx| **tx > 0) {
                held.entry(database.clone()).or_insert((host.clone(), tx));
            }
        }
    }
    held
}

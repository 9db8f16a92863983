//! What a pod's immudb holds of the declared databases, as an election and a hand-over compare
//! pods: each database's transactions and whether it is writable, fenced or replicating.

use crate::client::{Client, RpcError};
use crate::plan::failover::{self, Position, TxPosition};

/// What `session`'s server holds of `databases`: each one's transactions, and whether one of
/// them is writable.
pub async fn position_of(session: &Client, databases: &[String]) -> Result<Position, RpcError> {
    let listed = session.list_databases().await?;
    let mut position = Position::default();
    for name in databases {
        let Some(db) = listed.iter().find(|d| &d.name == name) else {
            position
                .transactions
                .insert(name.clone(), TxPosition::default());
            continue;
        };
        position.writable |= !db.replication.replica;
        position.fenced |= failover::is_fenced(db);
        if db.replication.replica && !failover::is_fenced(db) {
            position.replicating.insert(name.clone());
        }
        let held = if db.loaded {
            session.use_database(name).await?;
            session.position().await?.0
        } else {
            TxPosition::default()
        };
        position.transactions.insert(name.clone(), held);
    }
    Ok(position)
}

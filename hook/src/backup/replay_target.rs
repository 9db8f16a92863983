//! The database a `restore` or a `rebuild-primary` replays transactions into, on the primary,
//! through the kept admin session: made a replay target before they arrive and writable after.
//! `plan::replay` decides what it must be; this sends it.

use super::StepResult;
use crate::plan::replay::{self, Preparation};
use crate::plan::ReplicationSettings;
use crate::session::Session;

/// `database`, whose replication settings are `before` (None: missing), made a replay target.
pub async fn prepare(
    admin: &Session,
    database: &str,
    before: Option<&ReplicationSettings>,
) -> StepResult<()> {
    match replay::preparation(before) {
        Preparation::Create => {
            admin
                .call("CreateDatabaseV2", |c| async move {
                    c.create_replay_target(database).await
                })
                .await
        }
        Preparation::Switch => set(admin, database, &replay::replaying()).await,
        Preparation::Ready => Ok(()),
    }
}

/// Every transaction is in: `database` becomes writable, with the sync settings `before` had.
pub async fn finish(
    admin: &Session,
    database: &str,
    before: Option<&ReplicationSettings>,
) -> StepResult<()> {
    set(admin, database, &replay::writable_after(before)).await
}

async fn set(admin: &Session, database: &str, settings: &ReplicationSettings) -> StepResult<()> {
    admin
        .call("UpdateDatabaseV2", |c| async move {
            c.set_replication(database, settings).await
        })
        .await
}

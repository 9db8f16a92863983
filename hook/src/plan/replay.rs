//! A database that transactions are replayed into with replicateTx (`restore`,
//! `rebuild-primary`): what it must be while they arrive, how it gets there, and what it is
//! afterwards. Pure; the subcommands send it.

use super::ReplicationSettings;

/// immudb's own replicator defaults (pkg/replication/options.go). No replicator runs on a replay
/// target, but immudb requires both above 0 of every replica (immudb 1.11.1
/// pkg/server/db_options.go, `Validate`).
const PREFETCH_TX_BUFFER_SIZE: u32 = 100;
const COMMIT_CONCURRENCY: u32 = 10;

/// While transactions are replayed: a replica (immudb applies replicateTx only there) that
/// follows nobody (no replicator fetches anything: immuadmin's "external replicator" form),
/// without synchronous replication (a synchronous replica only precommits what it is sent until
/// a primary allows the commit).
pub fn replaying() -> ReplicationSettings {
    ReplicationSettings {
        replica: true,
        prefetch_tx_buffer_size: PREFETCH_TX_BUFFER_SIZE,
        replication_commit_concurrency: COMMIT_CONCURRENCY,
        ..Default::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preparation {
    /// Missing: created with [`replaying`] settings.
    Create,
    /// A primary (`--append`, an empty database to rebuild) or a replica of another kind:
    /// updated to [`replaying`].
    Switch,
    /// Already [`replaying`]: a replay that stopped halfway left it so.
    Ready,
}

pub fn preparation(existing: Option<&ReplicationSettings>) -> Preparation {
    match existing {
        None => Preparation::Create,
        Some(settings) if *settings == replaying() => Preparation::Ready,
        Some(_) => Preparation::Switch,
    }
}

/// Afterwards: writable again, with the synchronous replication it had as a primary before (a
/// restore `--append` onto a synchronous primary keeps its acknowledgements; immudb refuses a
/// synchronous primary without them), asynchronous when the replay created it or it was a
/// replica. Every replica field goes out empty: immudb keeps allowTxDiscarding,
/// skipIntegrityCheck and waitForIndexing when an update leaves them unset, and refuses them on
/// a primary.
pub fn writable_after(before: Option<&ReplicationSettings>) -> ReplicationSettings {
    let acks = before
        .filter(|b| !b.replica && b.sync_replication)
        .map(|b| b.sync_acks);
    ReplicationSettings::writable(acks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_created_switched_or_left_as_a_halfway_replay_left_it() {
        assert_eq!(preparation(None), Preparation::Create);
        assert_eq!(preparation(Some(&replaying())), Preparation::Ready);
        let sync_primary = ReplicationSettings::writable(Some(1));
        assert_eq!(preparation(Some(&sync_primary)), Preparation::Switch);
        let sync_replica = ReplicationSettings {
            sync_replication: true,
            ..replaying()
        };
        assert_eq!(preparation(Some(&sync_replica)), Preparation::Switch);
    }

    #[test]
    fn afterwards_a_primary_gets_its_acknowledgements_back_and_anything_else_none() {
        let sync_primary = ReplicationSettings::writable(Some(2));
        assert_eq!(writable_after(Some(&sync_primary)), sync_primary);
        assert_eq!(writable_after(None), ReplicationSettings::writable(None));
        let fenced = ReplicationSettings {
            sync_replication: true,
            allow_tx_discarding: true,
            ..replaying()
        };
        assert_eq!(
            writable_after(Some(&fenced)),
            ReplicationSettings::default()
        );
    }
}

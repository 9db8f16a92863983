//! The cut-off: what the winner of an election does before it takes the Lease, so that the old
//! primary gets no acknowledgement once another pod holds it.
//!
//! A primary that stopped for a while (SIGSTOP, a long GC pause, a frozen VM) keeps its
//! connections: its kernel still acknowledges TCP. immudb's replicator keeps its stream to the
//! server it reached through the write Service between fetches and reconnects only after a
//! failure (immudb 1.11.1 pkg/replication/replicator.go, `fetchNextTx`, `handleError`), and the
//! stream has no deadline, so a synchronous replica's stream to the stopped primary hangs, and
//! when the primary resumes it continues there: the replica acknowledges the old primary's new
//! writes, which the new primary never sees. A restart of the replicator cancels that stream
//! (`Stop`) and the new one connects through the Service again. So the winner first takes the
//! old primary's pod out of the write Service (its role label removed: no new connection reaches
//! it, whatever its last readiness probe said), then restarts the replicators of every pod that
//! answered the election, then reads their positions again and takes the Lease only if it still
//! holds every acknowledged write. The pods that did not answer are fewer than the
//! acknowledgements a write needs (the election's quorum), so the old primary cannot commit a
//! write with theirs alone; the winner itself acknowledges only what it then holds.

use super::failover::Peer;

/// The winner's steps before it takes the Lease (a failover, unlike a planned stop's
/// switchover, where the primary itself hands the Lease over).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cutoff {
    /// The previous holder's pod, whose role label is removed (None: nobody held the Lease,
    /// this pod did, or its address names no pod).
    pub unlabel: Option<String>,
    /// Each pod that answered, with the databases whose replicator it restarts.
    pub restarts: Vec<(String, Vec<String>)>,
}

/// The cut-off from `previous` (the Lease's last holder) to `me`, given what `peers` answered.
/// Nothing when no other pod held the Lease: a fresh install, or a holder that gave it up.
pub fn cutoff(previous: Option<&str>, me: &str, peers: &[Peer]) -> Cutoff {
    let Some(previous) = previous.filter(|previous| *previous != me) else {
        return Cutoff::default();
    };
    let unlabel = pod_of(previous).map(str::to_string);
    let restarts = peers
        .iter()
        .filter_map(|peer| {
            let position = peer.position.as_ref()?;
            let databases: Vec<String> = position.replicating.iter().cloned().collect();
            (!databases.is_empty()).then(|| (peer.host.clone(), databases))
        })
        .collect();
    Cutoff { unlabel, restarts }
}

/// The pod a StatefulSet pod's address names (`NAME-i.SERVICE.NAMESPACE.svc.DOMAIN`): its first
/// label. An IP address names none.
pub fn pod_of(host: &str) -> Option<&str> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    host.split('.').next().filter(|pod| !pod.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::failover::Position;

    fn peer(host: &str, replicating: Option<&[&str]>) -> Peer {
        Peer {
            host: host.into(),
            position: replicating.map(|dbs| Position {
                replicating: dbs.iter().map(|db| db.to_string()).collect(),
                ..Default::default()
            }),
        }
    }

    const OLD: &str = "db-immudb-primary-0.db-immudb-primary-hl.db.svc.cluster.local";
    const ME: &str = "db-immudb-read-0.db-immudb-read-hl.db.svc.cluster.local";
    const OTHER: &str = "db-immudb-read-1.db-immudb-read-hl.db.svc.cluster.local";

    #[test]
    fn the_old_primary_leaves_the_write_service_and_every_answering_replica_restarts() {
        let peers = [
            peer(OLD, None),
            peer(OTHER, Some(&["appdb", "chart_canary"])),
        ];
        assert_eq!(
            cutoff(Some(OLD), ME, &peers),
            Cutoff {
                unlabel: Some("db-immudb-primary-0".into()),
                restarts: vec![(OTHER.into(), vec!["appdb".into(), "chart_canary".into()])],
            }
        );
    }

    #[test]
    fn a_pod_without_replicators_restarts_nothing() {
        // A fenced former primary follows nobody: it has no replicator.
        let peers = [peer(OLD, Some(&[])), peer(OTHER, Some(&["appdb"]))];
        let cut = cutoff(Some(OLD), ME, &peers);
        assert_eq!(cut.restarts, vec![(OTHER.into(), vec!["appdb".into()])]);
    }

    #[test]
    fn without_another_previous_holder_there_is_nobody_to_cut_off() {
        let peers = [peer(OTHER, Some(&["appdb"]))];
        assert_eq!(cutoff(None, ME, &peers), Cutoff::default());
        assert_eq!(cutoff(Some(ME), ME, &peers), Cutoff::default());
    }

    #[test]
    fn only_a_statefulset_pods_address_names_its_pod() {
        assert_eq!(pod_of(OLD), Some("db-immudb-primary-0"));
        assert_eq!(pod_of("db-immudb-read-3"), Some("db-immudb-read-3"));
        assert_eq!(pod_of("10.0.0.7"), None);
        assert_eq!(pod_of("fd00::7"), None);
    }
}

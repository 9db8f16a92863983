//! Where the primary is. Without failover it is `--primary-host` (the primary StatefulSet's pod);
//! with failover it is the holder of the release's Lease, whichever StatefulSet its pod belongs
//! to, and every other pod of the release is a replica. The Job, `helm test`, backups and
//! restores find it this way, as the agents do. Which replica pods exist is the replica
//! StatefulSet's count (`kubectl scale` and an HPA change it without a `helm upgrade`): the
//! agents' elections and `helm test` read it.

use tokio::time::Instant;

use crate::config::Topology;
use crate::kube::{Kube, KubeError, LeaseLookup};
use crate::retry;

/// `topology` with `holder` as the primary and every other member as a replica.
pub fn with_primary(topology: &Topology, holder: &str) -> Topology {
    let members = std::iter::once(&topology.primary).chain(&topology.replicas);
    Topology {
        primary: holder.to_string(),
        replicas: members.filter(|h| *h != holder).cloned().collect(),
        ..topology.clone()
    }
}

/// `topology` (as declared, before [`with_primary`]) with the first `count` pods of the
/// replica StatefulSet as its replicas; a topology given as a list stays as it is.
pub fn with_replica_count(topology: &Topology, count: u32) -> Topology {
    let Some(pods) = &topology.replica_pods else {
        return topology.clone();
    };
    Topology {
        replicas: pods
            .hosts(count)
            .into_iter()
            .filter(|h| *h != topology.primary)
            .collect(),
        ..topology.clone()
    }
}

/// `topology` with every pod the replica StatefulSet has now, however many `kubectl scale` or
/// an HPA made (the StatefulSet form; a list stays as given).
pub async fn every_pod(topology: &Topology, kube: &Kube) -> Result<Topology, KubeError> {
    let Some(pods) = &topology.replica_pods else {
        return Ok(topology.clone());
    };
    let count = kube.statefulset_pods(&pods.statefulset).await?;
    Ok(with_replica_count(topology, count))
}

/// The topology as the Lease has it: waits (retrying transient failures) until someone holds
/// the Lease, until `deadline`. Returns it with the holder's address.
pub async fn from_lease(
    topology: &Topology,
    lookup: &LeaseLookup,
    deadline: Instant,
) -> Result<Topology, String> {
    let kube = Kube::new(lookup.kube.clone());
    let held = retry::until(deadline, || async {
        match kube.get_lease(&lookup.lease).await {
            Ok(Some(lease)) if lease.holder().is_some() => {
                Ok(lease.holder().map(str::to_string).unwrap_or_default())
            }
            Ok(_) => Err(crate::kube::KubeError::Unreachable {
                what: format!("lease {}", lookup.lease),
                message: "nobody holds it yet".into(),
            }),
            Err(error) => Err(error),
        }
    })
    .await
    .map_err(|e| format!("cannot find the primary from Lease {}: {e}", lookup.lease))?;
    tracing::info!(lease = %lookup.lease, primary = %held, "the Lease names the primary");
    Ok(with_primary(topology, &held))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReplicaPods;

    fn topology(primary: &str, replicas: &[&str], pods: Option<ReplicaPods>) -> Topology {
        Topology {
            primary: primary.into(),
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            grpc_port: 3322,
            metrics_port: 9497,
            hosts_file: "/etc/hosts".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            tls: None,
            agent_port: None,
            replica_pods: pods,
        }
    }

    #[test]
    fn the_holder_becomes_the_primary_and_the_old_primary_a_replica() {
        let topology = topology("p0", &["r0", "r1"], None);
        let moved = with_primary(&topology, "r1");
        assert_eq!(moved.primary, "r1");
        assert_eq!(moved.replicas, vec!["p0", "r0"]);
        assert_eq!(with_primary(&topology, "p0").replicas, vec!["r0", "r1"]);
    }

    #[test]
    fn a_statefulset_count_names_every_pod_and_a_list_stays() {
        let pods = ReplicaPods {
            statefulset: "db-read".into(),
            service: "db-read-hl".into(),
            namespace: "ns".into(),
            cluster_domain: "cluster.local".into(),
        };
        let topology = topology(
            "db-primary-0.db-primary-hl.ns.svc.cluster.local",
            &["db-read-0.db-read-hl.ns.svc.cluster.local"],
            Some(pods),
        );
        assert_eq!(
            with_replica_count(&topology, 3).replicas,
            vec![
                "db-read-0.db-read-hl.ns.svc.cluster.local",
                "db-read-1.db-read-hl.ns.svc.cluster.local",
                "db-read-2.db-read-hl.ns.svc.cluster.local",
            ]
        );
        // Counted first, then arranged around the Lease's holder: the primary StatefulSet's
        // pod becomes a replica and the holder is never one.
        let moved = with_primary(
            &with_replica_count(&topology, 3),
            "db-read-1.db-read-hl.ns.svc.cluster.local",
        );
        assert_eq!(
            moved.replicas,
            vec![
                "db-primary-0.db-primary-hl.ns.svc.cluster.local",
                "db-read-0.db-read-hl.ns.svc.cluster.local",
                "db-read-2.db-read-hl.ns.svc.cluster.local",
            ]
        );
        let listed = Topology {
            replica_pods: None,
            ..topology
        };
        assert_eq!(with_replica_count(&listed, 3).replicas, listed.replicas);
    }
}

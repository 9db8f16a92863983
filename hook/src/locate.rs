//! Where the primary is. Without failover it is `--primary-host` (the primary StatefulSet's pod);
//! with failover it is the holder of the release's Lease, whichever StatefulSet its pod belongs
//! to, and every other pod of the release is a replica. The Job, `helm test`, backups and
//! restores find it this way, as the agents do.

use tokio::time::Instant;

use crate::config::Topology;
use crate::kube::{Kube, LeaseLookup};
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

    #[test]
    fn the_holder_becomes_the_primary_and_the_old_primary_a_replica() {
        let topology = Topology {
            primary: "p0".into(),
            replicas: vec!["r0".into(), "r1".into()],
            grpc_port: 3322,
            metrics_port: 9497,
            hosts_file: "/etc/hosts".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            tls: None,
            agent_port: None,
        };
        let moved = with_primary(&topology, "r1");
        assert_eq!(moved.primary, "r1");
        assert_eq!(moved.replicas, vec!["p0", "r0"]);
        assert_eq!(with_primary(&topology, "p0").replicas, vec!["r0", "r1"]);
    }
}

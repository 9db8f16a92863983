//! The winner's cut-off before it takes the Lease (`plan::cutoff` decides what): the
//! previous holder's pod leaves the write Service, and the replicators of every pod that
//! answered restart, so no stream of theirs still reaches the previous primary.

use super::{Failover, ROLE_LABEL};
use crate::kube::KubeError;
use crate::plan::cutoff::Cutoff;
use crate::types::Credentials;

impl Failover {
    /// Applies `cutoff`; Err names the step that failed (the election waits for the next poll).
    pub(super) async fn cut_off(
        &mut self,
        cutoff: &Cutoff,
        admin: &Credentials,
    ) -> Result<(), String> {
        if let Some(pod) = &cutoff.unlabel {
            match self.kube.label_pod(pod, ROLE_LABEL, None).await {
                // A deleted pod is in no Service.
                Ok(()) | Err(KubeError::NotFound(_)) => {
                    tracing::info!(%pod, "took the previous primary's pod out of the write Service")
                }
                Err(error) => {
                    return Err(format!(
                        "cannot take the previous primary's pod {pod} out of the write Service: {error}"
                    ))
                }
            }
        }
        let restarts = &cutoff.restarts;
        let hosts = restarts.iter().map(|(host, _)| host.clone()).collect();
        let answers = self
            .ask_peers(&hosts, admin, |host, session| {
                let databases = restarts
                    .iter()
                    .find(|(peer, _)| peer == host)
                    .map_or(&[][..], |(_, databases)| databases.as_slice());
                async move {
                    for database in databases {
                        session.wake_replicator(database).await?;
                    }
                    Ok(databases.len())
                }
            })
            .await;
        for (host, restarted) in answers {
            match restarted {
                Some(count) => {
                    tracing::info!(peer = %host, databases = count, "restarted the pod's replicators: none of their streams reaches the previous primary")
                }
                None => return Err(format!("cannot restart the replicators of {host}")),
            }
        }
        Ok(())
    }
}

//! The StatefulSets and pods of the release as failover and the hand-over read them (pod
//! count, revisions, readiness), and the one label an agent sets on its own pod.

use reqwest::Method;
use serde::Deserialize;

use super::client::{Kube, KubeError};

/// What the agents read of a StatefulSet: which pods it has, and its revisions.
#[derive(Deserialize, Default)]
struct StatefulSetObject {
    #[serde(default)]
    spec: StatefulSetSpec,
    #[serde(default)]
    status: StatefulSetStatus,
}

#[derive(Deserialize, Default)]
struct StatefulSetSpec {
    replicas: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StatefulSetStatus {
    #[serde(default)]
    replicas: u32,
    update_revision: Option<String>,
    current_revision: Option<String>,
}

/// A StatefulSet as failover and the hand-over read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatefulSetView {
    /// How many pods it has or is about to have: the larger of the count it is asked for
    /// (`spec.replicas`, what `kubectl scale` and an HPA set) and the pods it created that still
    /// exist (`status.replicas`), so a pod being removed by a scale-down counts until it is
    /// gone, and one being created counts before it has an address.
    pub pods: u32,
    /// The revision its pods are being rolled to (`status.updateRevision`): a pod whose
    /// `controller-revision-hash` label equals it runs the current template.
    pub update_revision: Option<String>,
    /// The revision of the pods not yet rolled (`status.currentRevision`).
    pub current_revision: Option<String>,
}

impl StatefulSetView {
    /// A rolling update is under way: some pod still runs an older template.
    pub fn rolling(&self) -> bool {
        self.update_revision.is_some() && self.update_revision != self.current_revision
    }
}

/// The label a StatefulSet's controller puts on each pod: the revision it was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

#[derive(Deserialize, Default)]
struct PodObject {
    #[serde(default)]
    metadata: PodMeta,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodMeta {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    deletion_timestamp: Option<String>,
}

#[derive(Deserialize, Default)]
struct PodStatus {
    #[serde(default)]
    conditions: Vec<PodCondition>,
}

#[derive(Deserialize, Default)]
struct PodCondition {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    status: String,
}

/// A pod as the hand-over reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its StatefulSet revision (`controller-revision-hash`).
    pub revision: Option<String>,
    /// It is being deleted (`metadata.deletionTimestamp`): its containers are stopping.
    pub terminating: bool,
    /// The kubelet's Ready condition.
    pub ready: bool,
}

impl Kube {
    /// The StatefulSet `name`: its pod count ([`StatefulSetView::pods`]) and revisions.
    pub async fn statefulset(&self, name: &str) -> Result<StatefulSetView, KubeError> {
        let what = format!("get statefulset {name}");
        let url = format!(
            "{}/apis/apps/v1/namespaces/{}/statefulsets/{name}",
            self.config.url, self.config.namespace
        );
        let bytes = self.call(what.clone(), Method::GET, url, None).await?;
        let object: StatefulSetObject =
            serde_json::from_slice(&bytes).map_err(|e| KubeError::Malformed {
                what,
                message: format!("not a StatefulSet: {e}"),
            })?;
        Ok(StatefulSetView {
            // An unset spec.replicas means 1 (the API's default).
            pods: object
                .spec
                .replicas
                .unwrap_or(1)
                .max(object.status.replicas),
            update_revision: object.status.update_revision,
            current_revision: object.status.current_revision,
        })
    }

    /// How many pods the StatefulSet `name` has or is about to have ([`StatefulSetView::pods`]).
    pub async fn statefulset_pods(&self, name: &str) -> Result<u32, KubeError> {
        Ok(self.statefulset(name).await?.pods)
    }

    /// The pod `name`, None when it does not exist (deleted, not created yet).
    pub async fn pod(&self, name: &str) -> Result<Option<PodView>, KubeError> {
        let what = format!("get pod {name}");
        let url = format!(
            "{}/api/v1/namespaces/{}/pods/{name}",
            self.config.url, self.config.namespace
        );
        let bytes = match self.call(what.clone(), Method::GET, url, None).await {
            Ok(bytes) => bytes,
            Err(KubeError::NotFound(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        let pod: PodObject = serde_json::from_slice(&bytes).map_err(|e| KubeError::Malformed {
            what,
            message: format!("not a Pod: {e}"),
        })?;
        Ok(Some(PodView {
            revision: pod.metadata.labels.get(REVISION_LABEL).cloned(),
            labels: pod.metadata.labels,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            ready: pod
                .status
                .conditions
                .iter()
                .any(|c| c.kind == "Ready" && c.status == "True"),
        }))
    }

    /// Sets (Some) or removes (None) one label of a pod, leaving every other field alone.
    pub async fn label_pod(
        &self,
        pod: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), KubeError> {
        let url = format!(
            "{}/api/v1/namespaces/{}/pods/{pod}",
            self.config.url, self.config.namespace
        );
        let patch = serde_json::json!({ "metadata": { "labels": { key: value } } });
        self.call(
            format!("label pod {pod}"),
            Method::PATCH,
            url,
            Some((
                "application/merge-patch+json",
                patch.to_string().into_bytes(),
            )),
        )
        .await
        .map(drop)
    }
}

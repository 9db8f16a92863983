//! A small Kubernetes API client, for failover only: the release's Lease (get, create, replace
//! with optimistic concurrency), a label on the agent's own pod (a JSON merge patch), how many
//! pods the replica StatefulSet has and, for the hand-over's rollout order, the StatefulSets'
//! revisions and the release's pods (get by name). In a pod
//! it authenticates with the projected service-account token (re-read at every call: the kubelet
//! rotates it) and trusts only the cluster's CA; the address comes from KUBERNETES_SERVICE_HOST
//! and KUBERNETES_SERVICE_PORT, which the kubelet sets in every container.
//!
//! `client` is the connection (address, token, errors, one call); `lease` the Lease and the
//! flags that find it; `workloads` the StatefulSet and Pod views and the pod label.

mod client;
mod lease;
mod workloads;

pub use client::{Kube, KubeConfig, KubeError, SERVICE_ACCOUNT_DIR};
pub use lease::{micro_time, Lease, LeaseArgs, LeaseLookup, LeaseSpec, ObjectMeta};
pub use workloads::{PodView, StatefulSetView, REVISION_LABEL};

//! What a test does to the double and reads back: tokens, partitions and delays, the release's
//! pods and StatefulSets (added, scaled, rolled, marked terminating or Ready), the labels and
//! the write Service's selection, the Lease, and every call answered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::Api;

/// The double's objects, for a test to set up and inspect (cheap to clone into a task).
#[derive(Clone)]
pub struct KubeHandle {
    pub(crate) api: Arc<Mutex<Api>>,
}

impl KubeHandle {
    fn api(&self) -> std::sync::MutexGuard<'_, Api> {
        self.api.lock().expect("api lock")
    }

    /// A token the double accepts (one service account, many pods).
    pub fn add_token(&self, token: &str) {
        self.api().tokens.insert(token.to_string());
    }

    /// Cuts the client with `token` off (true) or lets it through again (false).
    pub fn cut_off(&self, token: &str, cut: bool) {
        let mut api = self.api();
        if cut {
            api.cut_off.insert(token.to_string());
        } else {
            api.cut_off.remove(token);
        }
    }

    /// Answers every call of the client with `token` `delay` late (None: at once again).
    pub fn delay(&self, token: &str, delay: Option<Duration>) {
        let mut api = self.api();
        match delay {
            Some(delay) => api.delayed.insert(token.to_string(), delay),
            None => api.delayed.remove(token),
        };
    }

    /// A pod of the release, as the StatefulSet creates it: its template's labels and its IP.
    pub fn add_pod(&self, ns: &str, name: &str, labels: &[(&str, &str)], ip: &str) {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        let mut api = self.api();
        let version = api.bump();
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "resourceVersion": version},
            "spec": {"containers": [{"name": "immudb", "image": "codenotary/immudb"}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "False"}]},
        });
        api.pods.insert((ns.into(), name.into()), pod);
    }

    /// A StatefulSet asked for `replicas` pods (as `kubectl scale` or an HPA sets it) that has
    /// `created` of them, as its controller reports them in `status.replicas`; its revisions
    /// are kept.
    pub fn scale_statefulset(&self, ns: &str, name: &str, replicas: u32, created: u32) {
        self.change_statefulset(ns, name, |statefulset| {
            statefulset["spec"]["replicas"] = replicas.into();
            statefulset["status"]["replicas"] = created.into();
        });
    }

    /// The StatefulSet's revisions, as its controller reports them: `update` is the template's
    /// (a pod created from it carries it in `controller-revision-hash`), `current` the one the
    /// pods not yet rolled run; they differ while a rolling update is under way.
    pub fn set_revisions(&self, ns: &str, name: &str, update: &str, current: &str) {
        self.change_statefulset(ns, name, |statefulset| {
            statefulset["status"]["updateRevision"] = update.into();
            statefulset["status"]["currentRevision"] = current.into();
        });
    }

    fn change_statefulset(&self, ns: &str, name: &str, change: impl FnOnce(&mut Value)) {
        let mut api = self.api();
        let version = api.bump();
        let statefulset = api
            .statefulsets
            .entry((ns.into(), name.into()))
            .or_insert_with(|| {
                json!({
                    "apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"replicas": 1, "serviceName": format!("{name}-hl")},
                    "status": {"replicas": 0},
                })
            });
        statefulset["metadata"]["resourceVersion"] = version.into();
        change(statefulset);
    }

    /// The pod is being deleted: `metadata.deletionTimestamp` is set, as the API server does
    /// before the kubelet stops its containers.
    pub fn terminate_pod(&self, ns: &str, name: &str) {
        let mut api = self.api();
        let version = api.bump();
        if let Some(pod) = api.pods.get_mut(&(ns.into(), name.into())) {
            pod["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z".into();
            pod["metadata"]["resourceVersion"] = version.into();
        }
    }

    /// The kubelet's verdict from the pod's readiness probe: a Service routes to Ready pods only.
    pub fn set_ready(&self, ns: &str, name: &str, ready: bool) {
        let mut api = self.api();
        if let Some(pod) = api.pods.get_mut(&(ns.into(), name.into())) {
            let status = if ready { "True" } else { "False" };
            pod["status"]["conditions"] = json!([{"type": "Ready", "status": status}]);
        }
    }

    /// Whether the pod exists.
    pub fn exists(&self, ns: &str, name: &str) -> bool {
        self.api().pods.contains_key(&(ns.into(), name.into()))
    }

    /// Whether the kubelet calls the pod Ready (its Ready condition).
    pub fn ready(&self, ns: &str, name: &str) -> bool {
        self.api()
            .pods
            .get(&(ns.into(), name.into()))
            .is_some_and(|pod| {
                pod["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
    }

    /// A pod deleted (its node lost): the Service stops selecting it.
    pub fn remove_pod(&self, ns: &str, name: &str) {
        self.api().pods.remove(&(ns.into(), name.into()));
    }

    pub fn pod_labels(&self, ns: &str, name: &str) -> BTreeMap<String, String> {
        let api = self.api();
        let empty = serde_json::Map::new();
        api.pods
            .get(&(ns.into(), name.into()))
            .and_then(|p| p["metadata"]["labels"].as_object())
            .unwrap_or(&empty)
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect()
    }

    /// The IPs of the pods a Service selecting `key=value` routes to, as kube-proxy picks them
    /// from the EndpointSlices: labelled, Ready and not terminating; when there are none, the
    /// Ready ones that are terminating (KEP-1669, GA in Kubernetes 1.28: a pod keeps serving
    /// while its preStop hook runs, until another is Ready).
    pub fn selected_ips(&self, ns: &str, key: &str, value: &str) -> Vec<String> {
        self.selector(ns, key, value)()
    }

    /// [`KubeDouble::selected_ips`] as a function, for a Service the immudb double resolves.
    pub fn selector(
        &self,
        ns: &str,
        key: &str,
        value: &str,
    ) -> impl Fn() -> Vec<String> + Send + Sync + 'static {
        let api = self.api.clone();
        let (ns, key, value) = (ns.to_string(), key.to_string(), value.to_string());
        move || {
            let api = api.lock().expect("api lock");
            let ready = |pod: &Value| {
                pod["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            };
            let serving: Vec<&Value> = api
                .pods
                .iter()
                .filter(|((pod_ns, _), pod)| {
                    *pod_ns == ns && pod["metadata"]["labels"][&key] == value.as_str() && ready(pod)
                })
                .map(|(_, pod)| pod)
                .collect();
            let terminating = |pod: &&Value| !pod["metadata"]["deletionTimestamp"].is_null();
            let running: Vec<&Value> = serving
                .iter()
                .copied()
                .filter(|p| !terminating(p))
                .collect();
            let chosen = if running.is_empty() { serving } else { running };
            chosen
                .into_iter()
                .filter_map(|pod| pod["status"]["podIP"].as_str().map(str::to_string))
                .collect()
        }
    }

    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.api().leases.get(&(ns.into(), name.into())).cloned()
    }

    /// Replaces a Lease as another writer would (e.g. an operator), bumping its version.
    pub fn put_lease(&self, ns: &str, lease: Value) {
        let mut api = self.api();
        let name = lease["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut lease = lease;
        lease["metadata"]["resourceVersion"] = api.bump().into();
        api.leases.insert((ns.into(), name), lease);
    }

    /// Calls answered so far, as (token, verb, resource, HTTP status).
    pub fn calls(&self) -> Vec<(String, String, String, u16)> {
        self.api().calls.clone()
    }
}

//! An in-process Kubernetes API server double for failover tests, as strict as the real one where
//! failover depends on it: bearer tokens (401 for an unknown one), RBAC from the chart's Role
//! (403), Leases (coordination.k8s.io/v1) with a resourceVersion bumped on every write and
//! optimistic concurrency (409 on a stale version or an existing name, 404 for a missing one),
//! pods whose labels change by JSON merge patch (and that are read, with their revision label,
//! Ready condition and deletionTimestamp), and StatefulSets to read (their replica counts and
//! revisions). A test adds the release's pods, scales its StatefulSets, rolls them to a new
//! revision, marks pods terminating, reads the labels the agents set, and can cut one client
//! off (its calls hang, as behind a partition).

pub mod objects;
pub mod rbac;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use rbac::Rule;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/";
const PODS: &str = "/api/v1/namespaces/";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/";
/// How long a cut-off client's call hangs before the double drops it.
const PARTITION_HANG: Duration = Duration::from_secs(30);

type Key = (String, String);

#[derive(Default)]
struct Api {
    version: u64,
    leases: BTreeMap<Key, Value>,
    pods: BTreeMap<Key, Value>,
    statefulsets: BTreeMap<Key, Value>,
    tokens: BTreeSet<String>,
    rules: Vec<Rule>,
    cut_off: BTreeSet<String>,
    /// Clients whose every call is answered this late (a slow or overloaded API server).
    delayed: BTreeMap<String, Duration>,
    /// Every answered call: (token, verb, resource, status).
    calls: Vec<(String, String, String, u16)>,
}

/// One running double; dropping it stops it. Its test helpers are on [`KubeHandle`].
pub struct KubeDouble {
    pub address: SocketAddr,
    handle: KubeHandle,
    task: JoinHandle<()>,
}

/// The double's objects, for a test to set up and inspect (cheap to clone into a task).
#[derive(Clone)]
pub struct KubeHandle {
    api: Arc<Mutex<Api>>,
}

impl std::ops::Deref for KubeDouble {
    type Target = KubeHandle;

    fn deref(&self) -> &KubeHandle {
        &self.handle
    }
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, body)
}

/// The request's target: (API group, namespace, resource, name).
fn route(path: &str) -> Option<(&'static str, String, &'static str, Option<String>)> {
    let (group, rest, resource) = if let Some(rest) = path.strip_prefix(LEASES) {
        ("coordination.k8s.io", rest, "leases")
    } else if let Some(rest) = path.strip_prefix(PODS) {
        ("", rest, "pods")
    } else if let Some(rest) = path.strip_prefix(STATEFULSETS) {
        ("apps", rest, "statefulsets")
    } else {
        return None;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts[..] {
        [ns, r] if r == resource => Some((group, ns.into(), resource, None)),
        [ns, r, name] if r == resource && !name.is_empty() => {
            Some((group, ns.into(), resource, Some(name.into())))
        }
        _ => None,
    }
}

fn verb(method: &Method, named: bool) -> &'static str {
    match (method.as_str(), named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => "unknown",
    }
}

impl Api {
    fn bump(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    fn answer(
        &mut self,
        method: &Method,
        path: &str,
        content_type: &str,
        body: &[u8],
        token: &str,
    ) -> (StatusCode, Value) {
        if !self.tokens.contains(token) {
            return status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized".into(),
            );
        }
        let Some((group, ns, resource, name)) = route(path) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
            );
        };
        let verb = verb(method, name.is_some());
        if !rbac::allowed(&self.rules, group, resource, verb, name.as_deref()) {
            let kind = if group.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}.{group}")
            };
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{kind} \"{}\" is forbidden: User \"system:serviceaccount:{ns}:immudb\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{ns}\"",
                    name.as_deref().unwrap_or("")
                ),
            );
        }
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        match (resource, verb) {
            ("leases", "get") => self.get_lease(&ns, &name.unwrap_or_default()),
            ("leases", "create") => match parsed {
                Some(lease) => self.create_lease(&ns, lease),
                None => status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the body is not JSON".into(),
                ),
            },
            ("leases", "update") => match parsed {
                Some(lease) => self.update_lease(&ns, &name.unwrap_or_default(), lease),
                None => status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the body is not JSON".into(),
                ),
            },
            ("statefulsets", "get") => {
                let name = name.unwrap_or_default();
                match self.statefulsets.get(&(ns, name.clone())) {
                    Some(statefulset) => (StatusCode::OK, statefulset.clone()),
                    None => status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("statefulsets.apps \"{name}\" not found"),
                    ),
                }
            }
            ("pods", "get") => match self.pods.get(&(ns, name.unwrap_or_default())) {
                Some(pod) => (StatusCode::OK, pod.clone()),
                None => status(StatusCode::NOT_FOUND, "NotFound", "pods not found".into()),
            },
            ("pods", "patch") if content_type != "application/merge-patch+json" => status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format: {content_type}"),
            ),
            ("pods", "patch") => match parsed {
                Some(patch) => self.patch_pod(&ns, &name.unwrap_or_default(), &patch),
                None => status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the body is not JSON".into(),
                ),
            },
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{verb} is not supported here"),
            ),
        }
    }

    fn get_lease(&self, ns: &str, name: &str) -> (StatusCode, Value) {
        match self.leases.get(&(ns.into(), name.into())) {
            Some(lease) => (StatusCode::OK, lease.clone()),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("leases.coordination.k8s.io \"{name}\" not found"),
            ),
        }
    }

    fn check_metadata(
        ns: &str,
        name: Option<&str>,
        lease: &Value,
    ) -> Result<String, (StatusCode, Value)> {
        let meta_name = lease["metadata"]["name"].as_str().unwrap_or("").to_string();
        let meta_ns = lease["metadata"]["namespace"].as_str().unwrap_or(ns);
        if meta_name.is_empty() {
            return Err(status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "metadata.name: Required value".into(),
            ));
        }
        if name.is_some_and(|n| n != meta_name) {
            return Err(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the name of the object does not match the name on the URL".into(),
            ));
        }
        if meta_ns != ns {
            return Err(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the namespace of the object does not match the namespace on the request".into(),
            ));
        }
        if lease["kind"] != "Lease" || lease["apiVersion"] != "coordination.k8s.io/v1" {
            return Err(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "expected kind Lease, apiVersion coordination.k8s.io/v1".into(),
            ));
        }
        objects::check_lease(lease).map_err(|m| {
            status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("Lease.coordination.k8s.io \"{meta_name}\" is invalid: {m}"),
            )
        })?;
        Ok(meta_name)
    }

    fn create_lease(&mut self, ns: &str, mut lease: Value) -> (StatusCode, Value) {
        let name = match Self::check_metadata(ns, None, &lease) {
            Ok(name) => name,
            Err(refused) => return refused,
        };
        if self.leases.contains_key(&(ns.into(), name.clone())) {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("leases.coordination.k8s.io \"{name}\" already exists"),
            );
        }
        lease["metadata"]["namespace"] = ns.into();
        lease["metadata"]["resourceVersion"] = self.bump().into();
        self.leases.insert((ns.into(), name), lease.clone());
        (StatusCode::CREATED, lease)
    }

    fn update_lease(&mut self, ns: &str, name: &str, mut lease: Value) -> (StatusCode, Value) {
        if let Err(refused) = Self::check_metadata(ns, Some(name), &lease) {
            return refused;
        }
        let key = (ns.to_string(), name.to_string());
        let Some(current) = self.leases.get(&key) else {
            return self.get_lease(ns, name);
        };
        let sent = lease["metadata"]["resourceVersion"].as_str().unwrap_or("");
        // Leases allow an unconditional update (no resourceVersion); a stale one conflicts.
        if !sent.is_empty() && sent != current["metadata"]["resourceVersion"] {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
            );
        }
        lease["metadata"]["namespace"] = ns.into();
        lease["metadata"]["resourceVersion"] = self.bump().into();
        self.leases.insert(key, lease.clone());
        (StatusCode::OK, lease)
    }

    fn patch_pod(&mut self, ns: &str, name: &str, patch: &Value) -> (StatusCode, Value) {
        let key = (ns.to_string(), name.to_string());
        let Some(before) = self.pods.get(&key).cloned() else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("pods \"{name}\" not found"),
            );
        };
        let mut after = before.clone();
        objects::merge_patch(&mut after, patch);
        if let Err(message) = objects::check_pod_change(&before, &after) {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("Pod \"{name}\" is invalid: {message}"),
            );
        }
        after["metadata"]["resourceVersion"] = self.bump().into();
        self.pods.insert(key, after.clone());
        (StatusCode::OK, after)
    }
}

async fn handle(
    api: Arc<Mutex<Api>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let token = header("authorization")
        .strip_prefix("Bearer ")
        .unwrap_or("")
        .to_string();
    let content_type = header("content-type");
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if api.lock().expect("api lock").cut_off.contains(&token) {
        tokio::time::sleep(PARTITION_HANG).await;
    }
    let delay = api.lock().expect("api lock").delayed.get(&token).copied();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let (code, value) = {
        let mut api = api.lock().expect("api lock");
        let answer = api.answer(&method, &path, &content_type, &body, &token);
        let resource = route(&path).map_or("", |r| r.2);
        let verb = verb(&method, route(&path).is_some_and(|r| r.3.is_some()));
        api.calls.push((
            token.clone(),
            verb.into(),
            resource.into(),
            answer.0.as_u16(),
        ));
        answer
    };
    let response = Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("a valid response");
    Ok(response)
}

impl KubeDouble {
    /// Serves on a free loopback port; `rules` is the service account's Role.
    pub async fn start(rules: Vec<Rule>) -> std::io::Result<KubeDouble> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let api = Arc::new(Mutex::new(Api {
            rules,
            ..Default::default()
        }));
        let shared = api.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let api = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| handle(api.clone(), r));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(KubeDouble {
            address,
            handle: KubeHandle { api },
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn handle(&self) -> KubeHandle {
        self.handle.clone()
    }
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

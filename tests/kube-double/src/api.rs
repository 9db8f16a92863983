//! The API server's answers: the route and verb of a request, the token and the Role checked,
//! and each call the double serves (Leases with optimistic concurrency, pods read and patched,
//! StatefulSets read), with the status the real server answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::objects;
use crate::rbac::{self, Rule};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/";

const PODS: &str = "/api/v1/namespaces/";

const STATEFULSETS: &str = "/apis/apps/v1/namespaces/";

type Key = (String, String);

#[derive(Default)]
pub(crate) struct Api {
    pub(crate) version: u64,
    pub(crate) leases: BTreeMap<Key, Value>,
    pub(crate) pods: BTreeMap<Key, Value>,
    pub(crate) statefulsets: BTreeMap<Key, Value>,
    pub(crate) tokens: BTreeSet<String>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) cut_off: BTreeSet<String>,
    /// Clients whose every call is answered this late (a slow or overloaded API server).
    pub(crate) delayed: BTreeMap<String, Duration>,
    /// Every answered call: (token, verb, resource, status).
    pub(crate) calls: Vec<(String, String, String, u16)>,
}

fn status(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, body)
}

/// The request's target: (API group, namespace, resource, name).
pub(crate) fn route(path: &str) -> Option<(&'static str, String, &'static str, Option<String>)> {
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

pub(crate) fn verb(method: &Method, named: bool) -> &'static str {
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
    pub(crate) fn bump(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    pub(crate) fn answer(
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

//! A small Kubernetes API client, for failover only: the release's Lease (get, create, replace
//! with optimistic concurrency), a label on the agent's own pod (a JSON merge patch), how many
//! pods the replica StatefulSet has and, for the hand-over's rollout order, the StatefulSets'
//! revisions and the release's pods (get by name). In a pod
//! it authenticates with the projected service-account token (re-read at every call: the kubelet
//! rotates it) and trusts only the cluster's CA; the address comes from KUBERNETES_SERVICE_HOST
//! and KUBERNETES_SERVICE_PORT, which the kubelet sets in every container.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::config::{reject, ConfigError};
use crate::plan::failover::LeaseRecord;
use crate::retry::Transient;
use crate::tls::TrustedCa;

pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Failover's Lease and how to reach the Kubernetes API: flags every subcommand shares, since
/// the Job, `helm test`, backups and the agents all find the primary through the Lease.
#[derive(clap::Args, Debug, Clone)]
pub struct LeaseArgs {
    /// Failover: the Lease whose holder is the primary (its pod's address). Without it the
    /// primary is --primary-host, as without failover.
    #[arg(long, env = "IMMUDB_HOOK_LEASE_NAME", global = true)]
    pub lease_name: Option<String>,
    /// The Kubernetes API; in a pod, from KUBERNETES_SERVICE_HOST and _PORT.
    #[arg(long, env = "IMMUDB_HOOK_KUBE_API_URL", global = true)]
    pub kube_api_url: Option<String>,
    /// The service-account token (re-read at every call: the kubelet rotates it).
    #[arg(
        long,
        env = "IMMUDB_HOOK_KUBE_TOKEN_FILE",
        global = true,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub kube_token_file: PathBuf,
    /// The CA that signed the API server's certificate (not read for an http:// URL).
    #[arg(
        long,
        env = "IMMUDB_HOOK_KUBE_CA_FILE",
        global = true,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )]
    pub kube_ca_file: PathBuf,
}

/// The Lease to read and where.
#[derive(Clone, Debug)]
pub struct LeaseLookup {
    pub kube: KubeConfig,
    pub lease: String,
}

impl LeaseArgs {
    /// None without --lease-name (failover off). `namespace` is the release's (--namespace),
    /// else the service account's.
    pub fn lookup(
        &self,
        namespace: Option<&str>,
        call_timeout: Duration,
    ) -> Result<Option<LeaseLookup>, ConfigError> {
        let Some(lease) = &self.lease_name else {
            return Ok(None);
        };
        crate::config::check_host("--lease-name", lease)?;
        let Some(url) = self
            .kube_api_url
            .clone()
            .or_else(KubeConfig::in_cluster_url)
        else {
            return reject(
                "--kube-api-url",
                "",
                "is required outside a pod (KUBERNETES_SERVICE_HOST is not set)",
            );
        };
        let ca = if url.starts_with("https://") {
            let pem = std::fs::read(&self.kube_ca_file).or_else(|e| {
                reject(
                    "--kube-ca-file",
                    self.kube_ca_file.display(),
                    format!("cannot read the cluster's CA: {e}"),
                )
            })?;
            Some(
                TrustedCa::from_pem(&pem)
                    .or_else(|rule| reject("--kube-ca-file", self.kube_ca_file.display(), rule))?,
            )
        } else if url.starts_with("http://") {
            None
        } else {
            return reject(
                "--kube-api-url",
                url,
                "must start with https:// (or http:// for a test server)",
            );
        };
        let namespace = match namespace {
            Some(ns) => ns.to_string(),
            None => std::fs::read_to_string(Path::new(SERVICE_ACCOUNT_DIR).join("namespace"))
                .map(|ns| ns.trim().to_string())
                .or_else(|e| {
                    reject(
                        "--namespace",
                        "",
                        format!("is required: no service-account namespace file ({e})"),
                    )
                })?,
        };
        if let Err(e) = std::fs::metadata(&self.kube_token_file) {
            return reject(
                "--kube-token-file",
                self.kube_token_file.display(),
                format!("cannot read the service-account token: {e}"),
            );
        }
        Ok(Some(LeaseLookup {
            kube: KubeConfig {
                url,
                token_file: self.kube_token_file.clone(),
                ca,
                namespace,
                call_timeout,
            },
            lease: lease.clone(),
        }))
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KubeError {
    /// 409: the object changed since it was read (or already exists): another writer won.
    #[error("{0}: conflict, another writer changed it first")]
    Conflict(String),
    #[error("{0}: not found")]
    NotFound(String),
    /// 401/403: the token or the Role does not allow the call; retrying does not help.
    #[error("{what}: forbidden ({status}): {message}")]
    Forbidden {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: HTTP {status}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    /// No answer (connection refused, timeout, TLS): the API server may be unreachable.
    #[error("{what}: {message}")]
    Unreachable { what: String, message: String },
    #[error("{what}: {message}")]
    Malformed { what: String, message: String },
}

impl Transient for KubeError {
    fn is_transient(&self) -> bool {
        match self {
            KubeError::Unreachable { .. } => true,
            KubeError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// Where the API server is and how to authenticate.
#[derive(Clone, Debug)]
pub struct KubeConfig {
    /// `https://host:port` (plain `http://` only for tests against the in-process double).
    pub url: String,
    pub token_file: PathBuf,
    pub ca: Option<TrustedCa>,
    pub namespace: String,
    pub call_timeout: Duration,
}

impl KubeConfig {
    /// The in-cluster address from the kubelet's env, IPv6 literals bracketed.
    pub fn in_cluster_url() -> Option<String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Some(format!("https://{host}:{port}"))
    }
}

/// A Lease as the API serves it: the fields failover reads and writes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: LeaseSpec,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<u32>,
    /// MicroTime: RFC 3339 with exactly six fractional digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<u32>,
}

/// Kubernetes' MicroTime text for `time`.
pub fn micro_time(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(text: &str) -> Option<SystemTime> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| SystemTime::from(t.with_timezone(&Utc)))
}

impl Lease {
    /// What the pure decisions read.
    pub fn record(&self) -> LeaseRecord {
        LeaseRecord {
            holder: self.spec.holder_identity.clone().filter(|h| !h.is_empty()),
            acquired: self.spec.acquire_time.as_deref().and_then(parse_time),
            transitions: self.spec.lease_transitions.unwrap_or(0),
            version: self.metadata.resource_version.clone(),
        }
    }

    pub fn holder(&self) -> Option<&str> {
        self.spec
            .holder_identity
            .as_deref()
            .filter(|h| !h.is_empty())
    }
}

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

/// The Kubernetes status body of an error: its message says why.
#[derive(Deserialize, Default)]
struct StatusBody {
    #[serde(default)]
    message: String,
}

#[derive(Clone)]
pub struct Kube {
    http: reqwest::Client,
    config: KubeConfig,
}

fn read_token(path: &Path) -> Result<String, KubeError> {
    let token = std::fs::read_to_string(path).map_err(|e| KubeError::Unreachable {
        what: "service-account token".into(),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    Ok(token.trim().to_string())
}

impl Kube {
    pub fn new(config: KubeConfig) -> Kube {
        let http = crate::tls::http_client_builder(config.ca.as_ref(), config.call_timeout)
            .build()
            .expect("an HTTP client with a preconfigured TLS builds");
        Kube { http, config }
    }

    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    fn lease_url(&self, name: Option<&str>) -> String {
        let base = format!(
            "{}/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.config.url, self.config.namespace
        );
        match name {
            Some(name) => format!("{base}/{name}"),
            None => base,
        }
    }

    /// One call: `what` names it in errors. Returns the body of a 2xx answer.
    async fn call(
        &self,
        what: String,
        method: Method,
        url: String,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Vec<u8>, KubeError> {
        let token = read_token(&self.config.token_file)?;
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .header("accept", "application/json");
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        let response = request.send().await.map_err(|e| KubeError::Unreachable {
            what: what.clone(),
            message: e.to_string(),
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| KubeError::Unreachable {
                what: what.clone(),
                message: e.to_string(),
            })?
            .to_vec();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<StatusBody>(&bytes)
            .unwrap_or_default()
            .message;
        Err(match status {
            StatusCode::CONFLICT => KubeError::Conflict(what),
            StatusCode::NOT_FOUND => KubeError::NotFound(what),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => KubeError::Forbidden {
                what,
                status: status.as_u16(),
                message,
            },
            _ => KubeError::Status {
                what,
                status: status.as_u16(),
                message,
            },
        })
    }

    fn lease_from(what: &str, bytes: &[u8]) -> Result<Lease, KubeError> {
        serde_json::from_slice(bytes).map_err(|e| KubeError::Malformed {
            what: what.to_string(),
            message: format!("not a Lease: {e}"),
        })
    }

    /// The Lease, or None when it does not exist.
    pub async fn get_lease(&self, name: &str) -> Result<Option<Lease>, KubeError> {
        let what = format!("get lease {name}");
        match self
            .call(what.clone(), Method::GET, self.lease_url(Some(name)), None)
            .await
        {
            Ok(bytes) => Self::lease_from(&what, &bytes).map(Some),
            Err(KubeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the Lease; Conflict when it exists already.
    pub async fn create_lease(&self, lease: &Lease) -> Result<Lease, KubeError> {
        let what = format!("create lease {}", lease.metadata.name);
        let body = self.lease_body(lease);
        let bytes = self
            .call(what.clone(), Method::POST, self.lease_url(None), Some(body))
            .await?;
        Self::lease_from(&what, &bytes)
    }

    /// Replaces the Lease if its resourceVersion is still the one given; Conflict otherwise.
    pub async fn replace_lease(&self, lease: &Lease) -> Result<Lease, KubeError> {
        let name = &lease.metadata.name;
        let what = format!("update lease {name}");
        let body = self.lease_body(lease);
        let bytes = self
            .call(
                what.clone(),
                Method::PUT,
                self.lease_url(Some(name)),
                Some(body),
            )
            .await?;
        Self::lease_from(&what, &bytes)
    }

    fn lease_body(&self, lease: &Lease) -> (&'static str, Vec<u8>) {
        let mut lease = lease.clone();
        lease.metadata.namespace.clone_from(&self.config.namespace);
        let mut value = serde_json::to_value(&lease).expect("a Lease serializes");
        value["apiVersion"] = "coordination.k8s.io/v1".into();
        value["kind"] = "Lease".into();
        ("application/json", value.to_string().into_bytes())
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_time_has_six_fractional_digits_and_reads_back() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let text = micro_time(time);
        assert_eq!(text, "2023-11-14T22:13:20.123456Z");
        assert_eq!(parse_time(&text), Some(time));
    }

    #[test]
    fn a_lease_without_holder_is_free() {
        let lease: Lease = serde_json::from_str(
            r#"{"metadata":{"name":"x","resourceVersion":"5"},"spec":{"holderIdentity":"","leaseTransitions":2}}"#,
        )
        .unwrap();
        let record = lease.record();
        assert_eq!(record.holder, None);
        assert_eq!(record.transitions, 2);
        assert_eq!(record.version, "5");
    }
}

//! The release's Lease (get, create, replace with optimistic concurrency) and the flags that
//! find it: its name and how to reach the API server.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Kube, KubeConfig, KubeError, SERVICE_ACCOUNT_DIR};
use crate::config::{reject, ConfigError};
use crate::plan::failover::LeaseRecord;
use crate::tls::TrustedCa;

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
            holder: self.holder().map(str::to_string),
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

impl Kube {
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

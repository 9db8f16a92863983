//! The connection to the Kubernetes API: where it is, the service-account token (re-read at
//! every call: the kubelet rotates it), the cluster's CA, and one call with its errors typed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::retry::Transient;
use crate::tls::TrustedCa;

pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

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

/// The Kubernetes status body of an error: its message says why.
#[derive(Deserialize, Default)]
struct StatusBody {
    #[serde(default)]
    message: String,
}

#[derive(Clone)]
pub struct Kube {
    http: reqwest::Client,
    pub(super) config: KubeConfig,
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

    /// One call: `what` names it in errors. Returns the body of a 2xx answer.
    pub(super) async fn call(
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
}

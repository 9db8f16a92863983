//! An in-process Kubernetes API server double for failover tests, as strict as the real one where
//! failover depends on it: bearer tokens (401 for an unknown one), RBAC from the chart's Role
//! (403), Leases (coordination.k8s.io/v1) with a resourceVersion bumped on every write and
//! optimistic concurrency (409 on a stale version or an existing name, 404 for a missing one),
//! pods whose labels change by JSON merge patch (and that are read, with their revision label,
//! Ready condition and deletionTimestamp), and StatefulSets to read (their replica counts and
//! revisions). A test adds the release's pods, scales its StatefulSets, rolls them to a new
//! revision, marks pods terminating, reads the labels the agents set, and can cut one client
//! off (its calls hang, as behind a partition).
//!
//! `api` answers the calls, `handle` is what a test does to the double and reads back, `objects`
//! and `rbac` the checks the API server makes.

mod api;
mod handle;
pub mod objects;
pub mod rbac;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use api::{route, verb, Api};
pub use handle::KubeHandle;
pub use rbac::Rule;

/// How long a cut-off client's call hangs before the double drops it.
const PARTITION_HANG: Duration = Duration::from_secs(30);

/// One running double; dropping it stops it. Its test helpers are on [`KubeHandle`].
pub struct KubeDouble {
    pub address: SocketAddr,
    handle: KubeHandle,
    task: JoinHandle<()>,
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

//! The kubelet: each pod's readiness probe, and a planned stop (the pod marked terminating,
//! the preStop hook, then immudb and the agent stopped and the pod created again).

use std::time::Duration;

use tokio::task::JoinHandle;

use super::pods::{pod_name, Release, NS};
use crate::common::*;

/// How long the kubelet lets a preStop hook run (the pod's terminationGracePeriodSeconds).
pub const GRACE: Duration = Duration::from_secs(30);

/// A pod's planned stop, as the kubelet ran it.
pub struct Stopped {
    pub node: u8,
    /// What the preStop hook answered (empty when it failed).
    pub answer: String,
    /// The agent's /metrics just before immudb stopped.
    pub metrics: String,
}

impl Stopped {
    /// One series' value in the captured metrics.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

impl Release {
    /// The kubelet: each pod's readiness from its agent's /readyz, as its readiness probe asks.
    pub fn run_kubelet(&self) {
        for node in 0..self.nodes.len() as u8 {
            self.probe(node);
        }
    }

    /// The kubelet's readiness probe of one pod, for as long as the test runs: a success makes
    /// it Ready, `probe_failure_threshold` failures in a row not Ready.
    pub fn probe(&self, node: u8) {
        let url = format!("http://{}:{AGENT_PORT}/readyz", self.cluster.host(node));
        let (pod, kube) = (pod_name(node), self.kube.handle());
        let threshold = self.harness.probe_failure_threshold;
        tokio::spawn(async move {
            let http = immudb_hook::tls::http_client_builder(None, Duration::from_millis(500))
                .build()
                .unwrap();
            let mut failures = 0;
            loop {
                let ready = match http.get(&url).send().await {
                    Ok(response) => response.status().is_success(),
                    Err(_) => false,
                };
                failures = if ready { 0 } else { failures + 1 };
                if ready || failures >= threshold {
                    kube.set_ready(NS, &pod, ready);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    /// The kubelet begins a planned stop of `node`'s pod: the pod is marked terminating and
    /// the immudb container's preStop hook (GET /prestop on the agent's port) runs, for at most
    /// [`GRACE`]. The handle ends when the hook answered, with the agent's metrics then.
    pub fn begin_stop(&self, node: u8) -> JoinHandle<Stopped> {
        self.kube.terminate_pod(NS, &pod_name(node));
        let agent = format!("http://{}:{AGENT_PORT}", self.cluster.host(node));
        tokio::spawn(async move {
            let http = immudb_hook::tls::http_client_builder(None, GRACE)
                .build()
                .unwrap();
            let get = |path: &'static str| {
                let (http, url) = (&http, format!("{agent}{path}"));
                async move {
                    match http.get(&url).send().await {
                        Ok(response) => response.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    }
                }
            };
            let answer = get("/prestop").await;
            let metrics = get("/metrics").await;
            Stopped {
                node,
                answer,
                metrics,
            }
        })
    }

    /// The kubelet ends the stop: immudb and the agent stop, the pod is deleted, and its
    /// StatefulSet creates it again from its current template, on the same volume; `version`
    /// is the immudb the new image runs, when it changed.
    pub async fn replace(&mut self, node: u8, version: Option<&str>) {
        self.lose(node);
        // The old agent's port closes once its task is cancelled; the new one binds it.
        let port = std::net::SocketAddr::new(self.cluster.ip(node), AGENT_PORT);
        assert!(
            eventually(Duration::from_secs(2), || async {
                tokio::net::TcpStream::connect(port).await.is_err()
            })
            .await,
            "the stopped agent's port closes"
        );
        if let Some(version) = version {
            self.nodes[node as usize].with_state(|s| s.version = version.to_string());
        }
        self.bring_back(node);
    }

    /// A planned restart of `node`'s pod (`kubectl delete pod`, a drain): the preStop hook, then
    /// the stop, then the same pod again.
    pub async fn restart(&mut self, node: u8) -> Stopped {
        let stopped = self.begin_stop(node).await.unwrap();
        self.replace(node, None).await;
        stopped
    }
}

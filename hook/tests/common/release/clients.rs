//! An application's clients: writes through the write Service (one at a time, or a Writer that
//! never stops), a Reader through the read Service, and what each node holds of them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use immudb_double::Node;
use immudb_hook::client::Client;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::pods::{Release, NS, WAIT};
use crate::common::*;

/// A client of the write Service: a session on whichever node it routes to now.
pub async fn write_session(release: &Release) -> Option<Client> {
    let ip = release
        .kube
        .selected_ips(NS, "immudb/role", "primary")
        .into_iter()
        .next()?;
    let node = release
        .nodes
        .iter()
        .find(|n| n.options.grpc.ip().to_string() == ip)?;
    let session = Client::new(&target(node))
        .ok()?
        .open_session(&admin(), "appdb")
        .await
        .ok()?;
    Some(session)
}

/// Writes `key` through the write Service until one write is acknowledged; returns its tx.
pub async fn write(release: &Release, key: &str) -> u64 {
    write_within(release, key, WAIT).await
}

/// [`write`], giving up after `wait`.
pub async fn write_within(release: &Release, key: &str, wait: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if let Some(session) = write_session(release).await {
            let set = tokio::time::timeout(
                Duration::from_millis(500),
                session.set(key.as_bytes(), key.as_bytes()),
            );
            if let Ok(Ok(tx)) = set.await {
                return tx;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no write of {key} was acknowledged through the write Service");
}

pub fn holds(node: &Node, key: &str) -> bool {
    node.with_state(|s| {
        s.databases
            .get("appdb")
            .and_then(|d| d.ledger.get(key.as_bytes()))
    })
    .is_some_and(|(_, value)| value == key.as_bytes())
}

pub fn tx_count(node: &Node) -> u64 {
    node.with_state(|s| s.databases.get("appdb").map_or(0, |d| d.tx_count()))
}

/// A client that writes through the write Service all the time, as an application does: one
/// session kept while it works, a new connection (wherever the Service routes then) 20 ms after
/// a failed or unanswered write.
pub struct Writer {
    task: JoinHandle<()>,
    acknowledged: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Writer {
    pub fn start(release: &Release) -> Writer {
        let routed = release.kube.selector(NS, "immudb/role", "primary");
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let acks = acknowledged.clone();
        let task = tokio::spawn(async move {
            let mut session: Option<Client> = None;
            for i in 0.. {
                let key = format!("w-{i}");
                if session.is_none() {
                    session = match routed().into_iter().next() {
                        Some(ip) => open(&ip).await,
                        None => None,
                    };
                }
                let written = match &session {
                    Some(client) => {
                        let set = client.set(key.as_bytes(), key.as_bytes());
                        matches!(
                            tokio::time::timeout(Duration::from_millis(500), set).await,
                            Ok(Ok(_))
                        )
                    }
                    None => false,
                };
                if written {
                    acks.lock().unwrap().push((key, Instant::now()));
                } else {
                    session = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Writer { task, acknowledged }
    }

    pub fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// The keys acknowledged so far.
    pub fn keys(&self) -> Vec<String> {
        let acks = self.acknowledged.lock().unwrap();
        acks.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Stops writing; every acknowledged key, and the longest time between two
    /// acknowledgements.
    pub fn stop(self) -> (Vec<String>, Duration) {
        self.task.abort();
        let acks = self.acknowledged.lock().unwrap();
        let longest = acks
            .windows(2)
            .map(|w| w[1].1 - w[0].1)
            .max()
            .unwrap_or_default();
        (acks.iter().map(|(k, _)| k.clone()).collect(), longest)
    }
}

/// An admin session on appdb at `ip`'s immudb.
async fn open(ip: &str) -> Option<Client> {
    let address = std::net::SocketAddr::new(ip.parse().ok()?, GRPC_PORT);
    let target = immudb_hook::client::Target {
        host: ip.to_string(),
        address,
        tls: None,
    };
    Client::new(&target)
        .ok()?
        .open_session(&admin(), "appdb")
        .await
        .ok()
}

/// A client that reads one key through the read Service all the time: one session kept, and
/// after a failed read a new connection to the next pod the Service routes to, and the read
/// again at once.
pub struct Reader {
    task: JoinHandle<()>,
    /// (reads that returned the key, failed reads, most failures in a row)
    counts: Arc<Mutex<(u64, u64, u64)>>,
}

impl Reader {
    pub fn start(release: &Release, key: &'static str) -> Reader {
        let routed = release.kube.selector(NS, "immudb/role", "replica");
        let counts = Arc::new(Mutex::new((0, 0, 0)));
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            let mut session: Option<Client> = None;
            let mut next = 0usize;
            let mut in_a_row = 0u64;
            loop {
                if session.is_none() {
                    let ips = routed();
                    if !ips.is_empty() {
                        next += 1;
                        session = open(&ips[next % ips.len()]).await;
                    }
                }
                let read = match &session {
                    Some(client) => {
                        let get = client.get(key.as_bytes());
                        matches!(tokio::time::timeout(Duration::from_millis(500), get).await, Ok(Ok(v)) if v == key.as_bytes())
                    }
                    None => false,
                };
                if read {
                    in_a_row = 0;
                } else {
                    in_a_row += 1;
                    session = None;
                }
                {
                    let mut counts = shared.lock().unwrap();
                    if read {
                        counts.0 += 1;
                    } else {
                        counts.1 += 1;
                        counts.2 = counts.2.max(in_a_row);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Reader { task, counts }
    }

    /// Stops reading: (reads that returned the key, failed reads, most failures in a row).
    pub fn stop(self) -> (u64, u64, u64) {
        self.task.abort();
        *self.counts.lock().unwrap()
    }
}

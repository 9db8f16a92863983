//! The sampler: every few milliseconds, whether the write Service routes to two pods, or two
//! routed nodes accept writes, at the same moment; the tests assert it never saw either.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::pods::{Release, NS};

impl Release {
    /// Every few milliseconds: how many pods the write Service routes to, and how many nodes
    /// accept writes, i.e. have appdb writable and are routed to. (A returning pod's immudb
    /// opens its databases as they were, writable, before its agent's first poll fences them;
    /// no Service routes to it then and, with sync acks, no replica acknowledges a write there.)
    pub fn sample_writable_primaries(&self) {
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|n| (n.options.grpc.ip().to_string(), n.state.clone()))
            .collect();
        let routed = self.kube.selector(NS, "immudb/role", "primary");
        let (flag, samples) = (self.two_primaries.clone(), self.samples.clone());
        let two_routed = self.two_routed.clone();
        tokio::spawn(async move {
            loop {
                let selected = routed();
                if selected.len() > 1 {
                    two_routed.store(true, Ordering::SeqCst);
                }
                let writable = nodes
                    .iter()
                    .filter(|(ip, state)| {
                        let state = state.lock().unwrap();
                        selected.contains(ip)
                            && !state.isolated
                            && state
                                .databases
                                .get("appdb")
                                .is_some_and(|db| db.loaded && !db.replication.replica)
                    })
                    .count();
                if writable > 1 {
                    flag.store(true, Ordering::SeqCst);
                }
                samples.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    pub fn no_two_primaries(&self) {
        assert!(self.samples.load(Ordering::SeqCst) > 10, "the sampler ran");
        assert!(
            !self.two_primaries.load(Ordering::SeqCst),
            "two nodes accepted writes at the same moment"
        );
        assert!(
            !self.two_routed.load(Ordering::SeqCst),
            "the write Service routed to two pods at the same moment"
        );
    }
}

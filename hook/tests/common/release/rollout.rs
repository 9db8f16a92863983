//! The StatefulSet controllers' rolling update: a new template, then its pods from the highest
//! ordinal down, one at a time, each stopped by the kubelet, created again on the new revision
//! and Ready before the next (Kubernetes' RollingUpdate).

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::kubelet::{Stopped, GRACE};
use super::pods::{pod_name, Release, StatefulSet, NS};

/// One pod's stop under way: its preStop hook runs.
struct Stopping {
    node: u8,
    hook: JoinHandle<Stopped>,
}

/// One StatefulSet's rolling update: its pods from the highest ordinal down, one at a time,
/// each restarted on the new revision and Ready before the next (Kubernetes' RollingUpdate).
struct Rolling {
    set: StatefulSet,
    left: Vec<u8>,
    stopping: Option<Stopping>,
    starting: Option<u8>,
}

impl Release {
    /// `set` gets a new template (`helm upgrade` changed it): its controller reports the new
    /// revision, and its pods still run the old one until they are rolled.
    pub fn new_template(&mut self, set: StatefulSet) {
        let old = set.revision(self.revisions[set as usize]);
        self.revisions[set as usize] += 1;
        let new = set.revision(self.revisions[set as usize]);
        self.kube.set_revisions(NS, set.name(), &new, &old);
    }

    /// `helm upgrade` (or `kubectl rollout restart`) of `sets`: each gets a new template and
    /// rolls its pods, concurrently, as its controller does; `version` is the immudb the new
    /// image runs, if it changes. Returns every pod's stop, in the order they ended.
    pub async fn roll(&mut self, sets: &[StatefulSet], version: Option<&str>) -> Vec<Stopped> {
        let mut rolling: Vec<Rolling> = sets
            .iter()
            .map(|&set| {
                self.new_template(set);
                let left: Vec<u8> = (0..self.nodes.len() as u8)
                    .filter(|&n| StatefulSet::of(n) == set)
                    .collect();
                Rolling {
                    set,
                    left,
                    stopping: None,
                    starting: None,
                }
            })
            .collect();
        let deadline = Instant::now() + GRACE * 4;
        let mut stopped = Vec::new();
        while rolling
            .iter()
            .any(|r| !r.left.is_empty() || r.stopping.is_some() || r.starting.is_some())
        {
            if Instant::now() > deadline {
                let mut why = Vec::new();
                for roll in &rolling {
                    if let Some(node) = roll.starting {
                        why.push(format!(
                            "{} not Ready: {:?}",
                            pod_name(node),
                            self.readyz(node).await
                        ));
                    }
                    if let Some(stopping) = &roll.stopping {
                        why.push(format!("{}'s preStop runs", pod_name(stopping.node)));
                    }
                }
                panic!("the rollout did not finish: {}", why.join("; "));
            }
            for roll in &mut rolling {
                if let Some(node) = roll.starting {
                    if !self.kube.ready(NS, &pod_name(node)) {
                        continue;
                    }
                    roll.starting = None;
                }
                if let Some(stopping) = &roll.stopping {
                    if !stopping.hook.is_finished() {
                        continue;
                    }
                    let stopping = roll.stopping.take().unwrap();
                    stopped.push(stopping.hook.await.unwrap());
                    self.replace(stopping.node, version).await;
                    roll.starting = Some(stopping.node);
                    continue;
                }
                if let Some(node) = roll.left.pop() {
                    roll.stopping = Some(Stopping {
                        node,
                        hook: self.begin_stop(node),
                    });
                } else {
                    let revision = roll.set.revision(self.revisions[roll.set as usize]);
                    self.kube
                        .set_revisions(NS, roll.set.name(), &revision, &revision);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stopped
    }
}

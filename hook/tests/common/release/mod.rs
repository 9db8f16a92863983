//! A release on the doubles, configured as the chart configures it: immudb doubles, their
//! agents in the StatefulSet form (pods named by their DNS names, which the hosts file
//! resolves), the Kubernetes API double with the chart's Role, the write Service (a name the
//! immudb double resolves, at every connection, to the pod labelled primary and Ready, as
//! kube-proxy routes it), a kubelet that probes each pod's readiness from its agent and, for a
//! planned stop, runs the preStop hook before it stops immudb, StatefulSet controllers that
//! roll their pods to a new revision in Kubernetes' order, and a sampler that never sees two
//! writable primaries behind the write Service, nor the write Service routing to two pods.
//! Used by `failover.rs`, `paused.rs` and `switchover.rs`.
//!
//! `pods` is the release and its pods, `kubelet` the probes and planned stops, `rollout` the
//! StatefulSet controllers' rolling update, `sampler` the two-primaries check, `clients` the
//! application's writes and reads through the Services.

mod clients;
mod kubelet;
mod pods;
mod rollout;
mod sampler;

// Every test crate compiles the harness, and uses all, part or none of it (as
// `#![allow(dead_code)]` in common/ says).
#[allow(unused_imports)]
pub use clients::*;
#[allow(unused_imports)]
pub use kubelet::*;
#[allow(unused_imports)]
pub use pods::*;

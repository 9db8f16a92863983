//! The immudb replication hook: waits for an immudb primary and its replicas, then converges them to
//! the declared replication topology. `main.rs` is the thin command-line edge. Layers, top down:
//! the command tree (`cli`), the subcommands (`converge` with `reconcile` and `node`, `verify`,
//! `backup`, `agent`), the engine (`config`, `wait`, `client`, `link`, `session`, `holdings`,
//! `report`, `scrape`, `transfer`, the pure `plan`) and the leaf types (`types`, `tls`, `retry`, `proto`); a file
//! imports only its layer or those below, without cycles (`tests/layers.rs`).

pub mod agent;
pub mod backup;
pub mod cli;
pub mod client;
pub mod config;
pub mod converge;
pub mod holdings;
pub mod kube;
pub mod link;
pub mod locate;
pub mod node;
pub mod plan;
pub mod reconcile;
pub mod report;
pub mod retry;
pub mod scrape;
pub mod session;
pub mod tls;
pub mod transfer;
pub mod types;
pub mod verify;
pub mod wait;

pub mod proto {
    tonic::include_proto!("immudb.schema");
}

//! Leaf types every layer shares: a secret and credentials, a node's role, immudb's storage
//! settings (and durations as the values file writes them), the desired state the planner
//! consumes. The bottom layer: these files import nothing of the crate except each other (and
//! external crates), so a change above never reaches them and they can be used from anywhere.

pub mod desired;
pub mod role;
pub mod secret;
pub mod settings;

pub use desired::{
    DesiredDatabase, PrimaryDesired, ReplicaDesired, ReplicaOptions, ReplicationSettings,
};
pub use role::Role;
pub use secret::{Credentials, Secret};
pub use settings::{Setting, StorageSettings};

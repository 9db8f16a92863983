//! Configuration: the shared flags (`TopologyArgs`), the spec file and the rules one value must
//! obey, turned into the leaf types the engine works with (a `Topology`, `Credentials`, the
//! `Desired` state). Every rule the servers would enforce later is checked here first, so a bad
//! value fails before any server is touched. It may import the leaf `types` and `tls`, never the
//! planner (`plan`) nor a subcommand; each subcommand owns its own flags and builds its config
//! from these pieces.

pub mod rules;
pub mod spec;
pub mod topology;

pub(crate) use rules::reject;
pub use rules::{check_database_name, read_password, ConfigError};
pub use spec::{ApplySettings, DatabaseReplication, Desired, Mode, Spec};
pub use topology::{check_host, ReplicaPods, Topology, TopologyArgs};

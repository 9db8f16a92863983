//! The agent's words for a database's condition (the `state` label of
//! `immudb_agent_database_state`, the probe's body) and for what it changed (the `reason` label of
//! `immudb_agent_repairs_total`).

use super::progress::Motion;

#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::VariantArray)]
pub enum State {
    /// Replicating and within the lag bound.
    Replicating,
    /// Replicating, still short of what the primary had when the agent started.
    CatchingUp,
    /// Replicating, but lacks a transaction the primary has had longer than the bound.
    Lagging,
    /// The replicator runs, but the database lacks transactions and has not advanced for the
    /// stall bound (a wake did not help).
    Stalled,
    Missing,
    NotLoaded,
    /// A writable database where a replica should be: reported, never changed.
    NotAReplica,
    ReplicatorStopped,
    /// The primary runs another immudb version: replication stops until versions agree.
    VersionMismatch,
    PrimaryUnreachable,
    /// The primary lacks the database.
    MissingOnPrimary,
    /// The primary holds fewer transactions than this replica: it lost data or was replaced.
    PrimaryBehind,
    /// On the primary: exists and is loaded.
    Serving,
    /// On the primary: missing while a replica holds its transactions; left for a rebuild.
    LostOnPrimary,
    /// A state the agent will not change (see the detail).
    Conflict,
    /// Failover: read-only without a primary to follow, because this pod lost (or never held)
    /// the Lease; it follows the primary once their histories compare.
    Fenced,
    /// Failover: holds committed transactions the primary lacks. Kept read-only, never
    /// overwritten or deleted; an operator decides (docs/runbooks/ImmudbDatabaseDiverged.md).
    Diverged,
}

impl State {
    /// The metric label value.
    pub fn name(self) -> &'static str {
        match self {
            State::Replicating => "replicating",
            State::CatchingUp => "catching_up",
            State::Lagging => "lagging",
            State::Stalled => "stalled",
            State::Missing => "missing",
            State::NotLoaded => "not_loaded",
            State::NotAReplica => "not_a_replica",
            State::ReplicatorStopped => "replicator_stopped",
            State::VersionMismatch => "version_mismatch",
            State::PrimaryUnreachable => "primary_unreachable",
            State::MissingOnPrimary => "missing_on_primary",
            State::PrimaryBehind => "primary_behind",
            State::Serving => "serving",
            State::LostOnPrimary => "lost_on_primary",
            State::Conflict => "conflict",
            State::Fenced => "fenced",
            State::Diverged => "diverged",
        }
    }
}

/// Why the agent changed something, the `reason` label of its repairs counter. `VARIANTS` lists
/// every reason, so the counter exports each one from the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, strum::VariantArray)]
pub enum Repair {
    Created,
    Loaded,
    Settings,
    ReplicatorRestarted,
    User,
    /// Failover: a replica database made writable on the new primary.
    Promoted,
    /// Failover: a writable database made read-only on a pod without the Lease.
    Fenced,
    /// Failover: a fenced database set to follow the new primary.
    Rejoined,
}

impl Repair {
    pub fn name(self) -> &'static str {
        match self {
            Repair::Created => "created",
            Repair::Loaded => "loaded",
            Repair::Settings => "settings",
            Repair::ReplicatorRestarted => "replicator_restarted",
            Repair::User => "user",
            Repair::Promoted => "promoted",
            Repair::Fenced => "fenced",
            Repair::Rejoined => "rejoined",
        }
    }
}

/// The state a replicating database's motion puts it in, and whether it is Ready.
pub fn replicating_state(motion: Motion) -> (State, bool) {
    match motion {
        Motion::Current => (State::Replicating, true),
        Motion::CatchingUp => (State::CatchingUp, false),
        Motion::Lagging => (State::Lagging, false),
        Motion::Stalled => (State::Stalled, false),
    }
}

/// The states of a database whose replicator runs against a reachable primary of its version.
pub fn is_replicating(state: State) -> bool {
    matches!(
        state,
        State::Replicating | State::CatchingUp | State::Lagging | State::Stalled
    )
}

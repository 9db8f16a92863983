//! What the hook did, one line per node and database, and the exit code that sums it up.
//!
//! Exit codes: 0 success; 2 invalid configuration (nothing was touched); 3 a node was not ready
//! before the deadline; 4 immudb versions differ; 5 a server refused a change (credentials,
//! permissions, unknown database, invalid settings) or the cluster holds a state the hook will not
//! overwrite; 6 `verify` did not see its key on a replica; 7 the backup storage failed (directory
//! missing or not writable, bucket missing, credentials refused, unreachable); 8 a backup does not
//! prove itself (checksum, gap, truncated or corrupted record, SHA-256, a file of another database,
//! a history that does not chain); 9 a restore or rebuild target already holds transactions it
//! will not overwrite; 143 terminated by SIGTERM (130 by SIGINT).

use std::fmt;

use crate::types::Role;

pub const EXIT_CONFIG: u8 = 2;

/// Why something failed, in the order that picks the exit code when several did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    VersionMismatch,
    /// A backup, or a history being copied, does not verify.
    Integrity,
    /// A restore or rebuild target holds transactions it will not overwrite.
    Conflict,
    /// The backup storage failed.
    Storage,
    Rejected,
    NotReady,
    NotReplicated,
    /// Not attempted because something it depends on failed.
    Skipped,
}

impl Failure {
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::NotReady | Failure::Skipped => 3,
            Failure::VersionMismatch => 4,
            Failure::Rejected => 5,
            Failure::NotReplicated => 6,
            Failure::Storage => 7,
            Failure::Integrity => 8,
            Failure::Conflict => 9,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    /// Updated; immudb applies the stored settings the next time the database loads.
    UpdatedPendingReload,
    /// Updated, then unloaded and loaded so the new settings are in effect.
    Reloaded,
    Unchanged,
    /// `verify`: the probe key was written on the primary at this transaction.
    Written {
        tx: u64,
    },
    /// `verify`: the replica returned the probe key this long after it was written.
    Replicated {
        after_ms: u64,
    },
    /// `verify --read-only`: the replica held the primary's transactions this long after start.
    CaughtUp {
        after_ms: u64,
    },
    /// `verify`: the replica never answered (its pod Pending, its node lost, being replaced);
    /// skipped, not a failure, and `reason` is the last check that failed.
    NotRunning {
        reason: String,
    },
    /// `backup`, `restore`, `rebuild-primary`: what was done to one database.
    Completed(String),
    Failed {
        failure: Failure,
        reason: String,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Created => f.write_str("created"),
            Outcome::Updated => f.write_str("updated"),
            Outcome::UpdatedPendingReload => f.write_str(
                "updated; new settings take effect at the next restart (applySettings: onReload)",
            ),
            Outcome::Reloaded => f.write_str("updated and reloaded (new settings in effect)"),
            Outcome::Unchanged => f.write_str("unchanged"),
            Outcome::Written { tx } => write!(f, "wrote the probe key at transaction {tx}"),
            Outcome::Replicated { after_ms } => write!(f, "replicated in {after_ms} ms"),
            Outcome::CaughtUp { after_ms } => {
                write!(f, "holds the primary's transactions after {after_ms} ms")
            }
            Outcome::NotRunning { reason } => write!(f, "skipped, not running: {reason}"),
            Outcome::Completed(what) => f.write_str(what),
            Outcome::Failed { reason, .. } => write!(f, "failed: {reason}"),
        }
    }
}

/// A failed step: the exit-code class and a one-line reason naming the thing.
pub type Failed = (Failure, String);
pub type StepResult<T> = Result<T, Failed>;

/// A history that does not prove itself (a checksum, a chain, an entries hash).
pub fn integrity(reason: impl Into<String>) -> Failed {
    (Failure::Integrity, reason.into())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub role: Role,
    pub host: String,
    /// `None` when the failure concerns the whole node.
    pub database: Option<String>,
    pub outcome: Outcome,
}

impl Line {
    /// One database's line: its outcome, or why it failed.
    pub fn for_database(
        role: Role,
        host: &str,
        database: &str,
        result: StepResult<Outcome>,
    ) -> Line {
        Line {
            role,
            host: host.to_string(),
            database: Some(database.to_string()),
            outcome: result.unwrap_or_else(|(failure, reason)| Outcome::Failed { failure, reason }),
        }
    }

    pub fn failed(role: Role, host: &str, failure: Failure, reason: impl Into<String>) -> Line {
        Line {
            role,
            host: host.to_string(),
            database: None,
            outcome: Outcome::Failed {
                failure,
                reason: reason.into(),
            },
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<Line>,
    /// Each node's immudb version, listed when they differ.
    pub versions: Vec<(String, String)>,
    /// `converge --check`: the configuration was only validated.
    pub checked_only: bool,
    /// Failover: the Lease and its holder, the primary this run used.
    pub lease_holder: Option<(String, String)>,
}

impl Report {
    pub fn checked() -> Report {
        Report {
            checked_only: true,
            ..Default::default()
        }
    }

    /// The report of a run that found the primary as the holder of `lease` (when Some).
    pub fn from_lease(self, lease: Option<(String, String)>) -> Report {
        Report {
            lease_holder: lease,
            ..self
        }
    }

    pub fn failures(&self) -> impl Iterator<Item = (&Line, Failure)> {
        self.lines.iter().filter_map(|l| match &l.outcome {
            Outcome::Failed { failure, .. } => Some((l, *failure)),
            _ => None,
        })
    }

    pub fn exit_code(&self) -> u8 {
        self.failures()
            .map(|(_, failure)| failure)
            .min()
            .map_or(0, Failure::exit_code)
    }

    fn count(&self, wanted: &Outcome) -> usize {
        self.count_where(|o| o == wanted)
    }

    fn count_where(&self, matching: impl Fn(&Outcome) -> bool) -> usize {
        self.lines.iter().filter(|l| matching(&l.outcome)).count()
    }

    /// `verify`'s note on the replicas it skipped as not running, naming each; empty when none.
    fn skipped(&self) -> String {
        let hosts: Vec<&str> = self
            .lines
            .iter()
            .filter(|l| matches!(l.outcome, Outcome::NotRunning { .. }))
            .map(|l| l.host.as_str())
            .collect();
        if hosts.is_empty() {
            return String::new();
        }
        format!(
            "; {} not running, skipped: {}",
            hosts.len(),
            hosts.join(", ")
        )
    }

    /// The closing line: converged, already converged, or what failed.
    pub fn verdict(&self) -> String {
        if self.checked_only {
            return "result: the configuration is valid; no server was contacted".to_string();
        }
        let failed = self.failures().count();
        if failed > 0 {
            let mut verdict = format!(
                "result: FAILED (exit {}): {failed} failed",
                self.exit_code()
            );
            if self.failures().any(|(_, f)| f == Failure::VersionMismatch) {
                let versions: Vec<String> = self
                    .versions
                    .iter()
                    .map(|(host, v)| format!("{host}={v}"))
                    .collect();
                verdict.push_str(&format!("; immudb versions: {}", versions.join(", ")));
            }
            return verdict;
        }
        let replicated = self.count_where(|o| matches!(o, Outcome::Replicated { .. }));
        if replicated > 0 {
            return format!(
                "result: verified, {replicated} replica(s) returned the probe key{}",
                self.skipped()
            );
        }
        let caught_up = self.count_where(|o| matches!(o, Outcome::CaughtUp { .. }));
        if caught_up > 0 {
            return format!(
                "result: verified, {caught_up} replica(s) hold the primary's transactions{}",
                self.skipped()
            );
        }
        let completed = self.count_where(|o| matches!(o, Outcome::Completed(_)));
        if completed > 0 {
            return format!("result: done, {completed} database(s)");
        }
        let created = self.count(&Outcome::Created);
        let pending = self.count(&Outcome::UpdatedPendingReload);
        let reloaded = self.count(&Outcome::Reloaded);
        let updated = self.count(&Outcome::Updated) + pending + reloaded;
        if created + updated == 0 {
            return "result: nothing to change, the cluster was already converged".to_string();
        }
        let mut verdict = format!(
            "result: converged ({created} created, {updated} updated, {} unchanged)",
            self.count(&Outcome::Unchanged)
        );
        if reloaded > 0 {
            verdict.push_str(&format!(
                "; {reloaded} database(s) reloaded to apply new settings"
            ));
        }
        if pending > 0 {
            verdict.push_str(&format!(
                "; {pending} database(s) hold new settings that take effect at their next restart"
            ));
        }
        verdict
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((lease, holder)) = &self.lease_holder {
            writeln!(f, "primary: {holder} (holder of Lease {lease})")?;
        }
        for line in &self.lines {
            writeln!(
                f,
                "{:<8} {:<40} {:<16} {}",
                line.role.to_string(),
                line.host,
                line.database.as_deref().unwrap_or("-"),
                line.outcome
            )?;
        }
        writeln!(f, "{}", self.verdict())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(outcome: Outcome) -> Line {
        Line {
            role: Role::Replica,
            host: "r".into(),
            database: Some("a".into()),
            outcome,
        }
    }

    #[test]
    fn the_most_actionable_failure_sets_the_exit_code() {
        let report = Report {
            lines: vec![
                line(Outcome::Created),
                Line::failed(Role::Replica, "r1", Failure::NotReady, "x"),
                Line::failed(Role::Replica, "r2", Failure::VersionMismatch, "y"),
            ],
            versions: vec![
                ("p".into(), "1.11.1".into()),
                ("r2".into(), "1.10.0".into()),
            ],
            ..Default::default()
        };
        assert_eq!(report.exit_code(), 4);
        assert!(report.verdict().contains("p=1.11.1, r2=1.10.0"));
    }

    #[test]
    fn the_summary_names_the_leases_holder_first() {
        let report = Report {
            lines: vec![line(Outcome::Unchanged)],
            ..Default::default()
        }
        .from_lease(Some(("db-immudb-primary".into(), "db-read-1.hl".into())));
        let text = report.to_string();
        assert!(
            text.starts_with("primary: db-read-1.hl (holder of Lease db-immudb-primary)\n"),
            "{text}"
        );
    }

    #[test]
    fn a_replica_not_running_is_named_and_leaves_the_exit_code_at_0() {
        let report = Report {
            lines: vec![
                line(Outcome::Written { tx: 3 }),
                line(Outcome::Replicated { after_ms: 12 }),
                Line {
                    host: "db-read-1".into(),
                    ..line(Outcome::NotRunning {
                        reason: "name db-read-1 does not resolve: no record found".into(),
                    })
                },
            ],
            ..Default::default()
        };
        assert_eq!(report.exit_code(), 0);
        assert_eq!(
            report.verdict(),
            "result: verified, 1 replica(s) returned the probe key; 1 not running, skipped: db-read-1"
        );
        assert!(report
            .to_string()
            .contains("skipped, not running: name db-read-1 does not resolve: no record found"));
    }

    #[test]
    fn a_second_run_says_nothing_changed() {
        let report = Report {
            lines: vec![line(Outcome::Unchanged)],
            ..Default::default()
        };
        assert_eq!(report.exit_code(), 0);
        assert!(report.verdict().contains("already converged"));
        let changed = Report {
            lines: vec![line(Outcome::Created), line(Outcome::Unchanged)],
            ..Default::default()
        };
        assert_eq!(
            changed.verdict(),
            "result: converged (1 created, 0 updated, 1 unchanged)"
        );
    }
}

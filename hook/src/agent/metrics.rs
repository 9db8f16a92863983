//! The agent's own metrics, in Prometheus's text format.

use std::fmt::Write;
use std::time::Instant;

use super::counters::{Counters, LabelledCounter, Series};
use crate::plan::health::{Assessment, DatabaseHealth, State};
use crate::types::Role;
use strum::VariantArray;

/// The agent's state after a poll, as the HTTP server shows it.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Set after the first poll that reached the local server.
    pub assessment: Option<Assessment>,
    pub primary_reachable: bool,
    /// The role the last poll acted in (with failover, the Lease's).
    pub role: Option<Role>,
    /// Why the last poll could not assess (the local server down, ...).
    pub error: Option<String>,
    /// The pod is being stopped and no longer serves (a replica draining, a primary handing its
    /// role over or done with it): not Ready, whatever the assessment says.
    pub stopping: Option<String>,
    pub last_poll_seconds: f64,
    pub counters: Counters,
    /// With failover, a primary's verdict holds until then (its last renew of the Lease plus
    /// the fence time): whoever asks later, also after the process was stopped and resumed
    /// before its next poll, hears not Ready.
    pub serving_until: Option<Instant>,
}

impl Status {
    pub fn ready(&self) -> bool {
        self.stopping.is_none()
            && self.error.is_none()
            && self.assessment.as_ref().is_some_and(|a| a.ready)
            && !self.serving_lapsed()
    }

    fn serving_lapsed(&self) -> bool {
        self.serving_until
            .is_some_and(|until| Instant::now() >= until)
    }

    /// One line per reason the pod is not Ready, for the probe's body and the log.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        if let Some(stopping) = &self.stopping {
            return vec![stopping.clone()];
        }
        if let Some(error) = &self.error {
            return vec![error.clone()];
        }
        if self.serving_lapsed() {
            return vec![
                "the Lease was not renewed in time since the last poll; not serving until one renews it"
                    .into(),
            ];
        }
        let Some(assessment) = &self.assessment else {
            return vec!["no poll has finished yet".into()];
        };
        assessment
            .databases
            .iter()
            .filter(|d| !d.ready)
            .map(|d| {
                let detail = match (d.state, d.lag) {
                    (State::Stalled | State::Lagging, Some(lag)) => Some(lag.describe()),
                    _ => d.detail.clone(),
                };
                let detail = detail.map_or(String::new(), |t| format!(": {t}"));
                format!("database '{}' is {}{detail}", d.name, d.state.name())
            })
            .collect()
    }
}

fn family(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A counter with labels: every series the agent knows of, at 0 until its first event.
fn labelled_counter<S: Series>(
    text: &mut String,
    name: &str,
    help: &str,
    counter: &LabelledCounter<S>,
    databases: &[String],
) {
    family(text, name, "counter", help);
    for (series, count) in counter.series(databases) {
        let _ = writeln!(text, "{name}{{{}}} {count}", series.labels());
    }
}

/// A gauge with one series per database; `value` None leaves a database out.
fn database_gauge(
    text: &mut String,
    name: &str,
    help: &str,
    databases: &[DatabaseHealth],
    value: impl Fn(&DatabaseHealth) -> Option<f64>,
) {
    family(text, name, "gauge", help);
    for db in databases {
        if let Some(value) = value(db) {
            let _ = writeln!(text, "{name}{{db=\"{}\"}} {value}", db.name);
        }
    }
}

fn flag(on: bool) -> f64 {
    f64::from(u8::from(on))
}

/// The agent's `/metrics`.
pub fn render(status: &Status) -> String {
    let mut text = String::new();
    family(&mut text, "immudb_agent_ready", "gauge", "1 when the pod is Ready: every database replicates and is within the lag bound (replicas), or is loaded (primary).");
    let _ = writeln!(text, "immudb_agent_ready {}", u8::from(status.ready()));
    family(
        &mut text,
        "immudb_agent_primary_reachable",
        "gauge",
        "1 when the agent reached the primary in its last poll.",
    );
    let _ = writeln!(
        text,
        "immudb_agent_primary_reachable {}",
        u8::from(status.primary_reachable)
    );
    if let Some(assessment) = &status.assessment {
        let databases = &assessment.databases;
        database_gauge(&mut text, "immudb_agent_replicating", "1 when the database's replicator runs against a reachable primary of the same version.", databases, |db| Some(flag(db.replicating)));
        database_gauge(
            &mut text,
            "immudb_agent_lag_transactions",
            "Transactions the primary has committed that this replica lacks.",
            databases,
            |db| db.lag.map(|lag| lag.transactions as f64),
        );
        database_gauge(&mut text, "immudb_agent_lag_seconds", "How long ago the primary first had a transaction this replica still lacks (0 when caught up): the age of the primary's state the replica holds.", databases, |db| db.lag.map(|lag| lag.seconds));
        family(
            &mut text,
            "immudb_agent_database_state",
            "gauge",
            "1 for the state each database is in.",
        );
        for db in databases {
            for &state in State::VARIANTS {
                let value = u8::from(db.state == state);
                let _ = writeln!(
                    text,
                    "immudb_agent_database_state{{db=\"{}\",state=\"{}\"}} {value}",
                    db.name,
                    state.name()
                );
            }
        }
        database_gauge(&mut text, "immudb_agent_settings_unconfirmed", "1 when immudb accepted the agent's settings update for a database but reports other values back; the update is not sent again.", databases, |db| Some(flag(db.settings_unconfirmed)));
    }
    family(
        &mut text,
        "immudb_agent_role",
        "gauge",
        "1 for the role the pod acts in: with failover, primary only while it holds the Lease.",
    );
    // Not `role`: the chart's monitors set `role` on every target, and Prometheus would rename
    // this one `exported_role`.
    for role in [Role::Primary, Role::Replica] {
        let value = u8::from(status.role == Some(role));
        let _ = writeln!(text, "immudb_agent_role{{agent_role=\"{role}\"}} {value}");
    }
    let counters = &status.counters;
    family(
        &mut text,
        "immudb_agent_failovers_total",
        "counter",
        "Failovers this agent made: it took the Lease from a primary that stopped renewing it.",
    );
    let _ = writeln!(text, "immudb_agent_failovers_total {}", counters.failovers);
    labelled_counter(
        &mut text,
        "immudb_agent_switchovers_total",
        "Planned hand-overs of the primary role, never failovers: handed_over (this agent moved the Lease to a replica that then served writes, before its pod stopped), kept_role (it could not finish in time; the pod kept the Lease through its restart), received (another pod handed the role to this one; the count that outlives the stopping pod).",
        &counters.switchovers,
        &counters.databases,
    );
    labelled_counter(
        &mut text,
        "immudb_agent_failover_lost_transactions_total",
        "Transactions the old primary had when last seen that this agent's failovers lacked (asynchronous replication).",
        &counters.lost_transactions,
        &counters.databases,
    );
    labelled_counter(
        &mut text,
        "immudb_agent_replicator_wakes_total",
        "Replicators the agent woke from immudb's retry sleep (an UpdateDatabaseV2 that changes nothing): an asynchronous replica database lacked transactions and had not advanced.",
        &counters.wakes,
        &counters.databases,
    );
    labelled_counter(
        &mut text,
        "immudb_agent_repairs_total",
        "Changes the agent made, by database and reason.",
        &counters.repairs,
        &counters.databases,
    );
    family(
        &mut text,
        "immudb_agent_polls_total",
        "counter",
        "Polls run.",
    );
    let _ = writeln!(text, "immudb_agent_polls_total {}", counters.polls);
    family(
        &mut text,
        "immudb_agent_poll_errors_total",
        "counter",
        "Polls that could not reach the local immudb.",
    );
    let _ = writeln!(
        text,
        "immudb_agent_poll_errors_total {}",
        counters.poll_errors
    );
    family(
        &mut text,
        "immudb_agent_logins_total",
        "counter",
        "Sessions the agent opened or tried to open (each login costs immudb about 100 ms of CPU).",
    );
    let _ = writeln!(text, "immudb_agent_logins_total {}", counters.logins);
    family(
        &mut text,
        "immudb_agent_poll_duration_seconds",
        "gauge",
        "Duration of the last poll.",
    );
    let _ = writeln!(
        text,
        "immudb_agent_poll_duration_seconds {}",
        status.last_poll_seconds
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::counters::Repaired;
    use crate::plan::health::Repair;
    use strum::VariantArray;

    #[test]
    fn before_the_first_poll_the_pod_is_not_ready_and_says_why() {
        let status = Status::default();
        assert!(!status.ready());
        assert_eq!(status.not_ready_reasons(), vec!["no poll has finished yet"]);
        let text = render(&status);
        assert!(text.contains("immudb_agent_ready 0\n"));
        assert!(text.contains("# TYPE immudb_agent_repairs_total counter"));
    }

    fn before_any_event() -> Status {
        let mut status = Status::default();
        status.counters.databases = vec!["appdb".into(), "audit".into()];
        status
    }

    #[test]
    fn every_repair_series_is_exported_at_zero_before_the_first_repair() {
        let text = render(&before_any_event());
        for db in ["appdb", "audit"] {
            for reason in Repair::VARIANTS {
                let series = format!(
                    "immudb_agent_repairs_total{{db=\"{db}\",reason=\"{}\"}} 0\n",
                    reason.name()
                );
                assert!(text.contains(&series), "{series} missing from\n{text}");
            }
        }
    }

    #[test]
    fn every_counter_family_has_a_series_before_its_first_event() {
        // A counter added as a plain map of labels would export nothing until its first event.
        let text = render(&before_any_event());
        let counters: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .collect();
        assert!(counters.contains(&"immudb_agent_repairs_total"), "{text}");
        for name in counters {
            let samples = text.lines().filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            });
            assert!(samples.count() > 0, "{name} has no series:\n{text}");
        }
    }

    #[test]
    fn a_stalled_database_says_what_it_lacks_and_for_how_long_in_the_probe_body() {
        use crate::plan::health::DatabaseHealth;
        use crate::plan::lag::Lag;
        let mut status = before_any_event();
        status.assessment = Some(Assessment {
            databases: vec![DatabaseHealth {
                name: "appdb".into(),
                state: State::Stalled,
                replicating: true,
                ready: false,
                lag: Some(Lag {
                    transactions: 3,
                    seconds: 12.0,
                    catching_up: false,
                    stuck_seconds: 11.0,
                }),
                detail: None,
                settings_unconfirmed: false,
            }],
            ..Default::default()
        });
        assert!(!status.ready());
        assert_eq!(
            status.not_ready_reasons(),
            ["database 'appdb' is stalled: lacks 3 transaction(s), the oldest committed on the primary 12 s ago; no progress for 11 s"]
        );
        let text = render(&status);
        assert!(text.contains("immudb_agent_database_state{db=\"appdb\",state=\"stalled\"} 1\n"));
        assert!(text.contains("immudb_agent_replicator_wakes_total{db=\"appdb\"} 0\n"));
    }

    #[test]
    fn a_stopping_pod_is_not_ready_and_says_why_first() {
        let mut status = before_any_event();
        status.assessment = Some(Assessment {
            ready: true,
            ..Default::default()
        });
        assert!(status.ready());
        status.stopping = Some("stopping: draining".into());
        assert!(!status.ready());
        assert_eq!(status.not_ready_reasons(), ["stopping: draining"]);
        let text = render(&status);
        assert!(text.contains("immudb_agent_switchovers_total{outcome=\"handed_over\"} 0\n"));
        assert!(text.contains("immudb_agent_switchovers_total{outcome=\"kept_role\"} 0\n"));
    }

    #[test]
    fn a_primary_is_ready_only_until_its_last_renew_is_too_old() {
        let mut status = before_any_event();
        status.assessment = Some(Assessment {
            ready: true,
            ..Default::default()
        });
        let now = Instant::now();
        status.serving_until = Some(now + std::time::Duration::from_secs(60));
        assert!(status.ready());
        // Read later than that (the process stopped before its next poll): not Ready, and why.
        status.serving_until = Some(now);
        assert!(!status.ready());
        assert_eq!(
            status.not_ready_reasons(),
            ["the Lease was not renewed in time since the last poll; not serving until one renews it"]
        );
        assert!(render(&status).contains("immudb_agent_ready 0\n"));
    }

    #[test]
    fn a_repair_counts_on_its_own_series() {
        let mut status = before_any_event();
        status.counters.repairs.increment(Repaired {
            db: "audit".into(),
            reason: Repair::Loaded,
        });
        let text = render(&status);
        assert!(text.contains("immudb_agent_repairs_total{db=\"audit\",reason=\"loaded\"} 1\n"));
        assert!(text.contains("immudb_agent_repairs_total{db=\"appdb\",reason=\"loaded\"} 0\n"));
    }
}

//! The Job (`converge`): wait for every node at once, converge the primary, then each replica as
//! soon as it is ready; with `applySettings: immediately`, reload changed databases one node at a
//! time; report per node and database. Sessions stay open for the whole run and close at the end.

use std::collections::BTreeMap;

use futures::future::join_all;
use tokio::time::Instant;
use tracing::Instrument;

use crate::client::{Client, RpcError};
use crate::config::{ApplySettings, DatabaseReplication, Desired};
use crate::converge::Config;
use crate::holdings::held_by_replicas;
use crate::node::{self, converge_node};
use crate::plan::{self, Action, Observed};
use crate::report::{Failure, Line, Outcome, Report, StepResult};
use crate::scrape;
use crate::session::{Bound, Logins, Session};
use crate::types::{Role, Secret};
use crate::wait::{joined, node_span, spawn_waits, ReadyNode, Waiting};

type Outcomes = Vec<(String, Outcome)>;

fn lines(role: Role, host: &str, outcomes: Outcomes) -> Vec<Line> {
    outcomes
        .into_iter()
        .map(|(database, outcome)| Line {
            role,
            host: host.to_string(),
            database: Some(database),
            outcome,
        })
        .collect()
}

fn names(spec: &DatabaseReplication) -> Vec<String> {
    spec.databases.iter().map(|d| d.name.clone()).collect()
}

/// A node that converged: its open session, what was applied, and its per-database outcomes.
struct NodeRun {
    host: String,
    role: Role,
    session: Session,
    applied: Vec<Action>,
    outcomes: Outcomes,
}

/// Polls until the replica holds at least the primary's transaction count for every database.
async fn wait_for_catch_up(session: &Session, targets: &BTreeMap<String, u64>) -> StepResult<()> {
    let behind = |observed: &Observed| -> Option<String> {
        targets.iter().find_map(|(db, target)| {
            let have = observed.database(db).map_or(0, |d| d.tx_count);
            (have < *target).then(|| format!("database '{db}' has {have} of {target} transactions"))
        })
    };
    let behind = &behind;
    let caught_up = |c: Client| async move {
        let observed = c.observe(false).await?;
        match behind(&observed) {
            None => Ok(()),
            Some(lag) => Err(RpcError::pending("catch-up", lag)),
        }
    };
    session
        .call("catch-up", caught_up)
        .await
        .map_err(|(_, reason)| (Failure::NotReplicated, reason))
}

/// The Job is the release gate: a replica counts once immudb runs a replicator for each of its
/// databases (the agent restarts one a version mismatch stopped; the Job waits for that).
async fn wait_for_replicators(
    session: &Session,
    ready: &ReadyNode,
    metrics_port: u16,
    databases: &[String],
) -> StepResult<()> {
    // Replicas never serve TLS: immudb's replicator could not reach a TLS primary.
    let http = crate::tls::http_client_builder(None, std::time::Duration::from_secs(2))
        .build()
        .map_err(|e| (Failure::NotReady, format!("HTTP client: {e}")))?;
    let url = format!(
        "http://{}/metrics",
        std::net::SocketAddr::new(ready.address.ip(), metrics_port)
    );
    let (http, url) = (&http, &url);
    let replicating = |_| async move {
        let gauges = scrape::scrape_gauge(http, url, scrape::REPLICATORS)
            .await
            .map_err(|e| RpcError::pending("replicators", e))?;
        match databases
            .iter()
            .find(|db| gauges.get(*db).is_none_or(|n| *n == 0))
        {
            None => Ok(()),
            Some(db) => Err(RpcError::pending(
                "replicators",
                format!(
                    "database '{db}' has no running replicator yet ({} is 0)",
                    scrape::REPLICATORS
                ),
            )),
        }
    };
    session
        .call("replicating", replicating)
        .await
        .map_err(|(_, reason)| (Failure::NotReplicated, reason))
}

/// systemdb mode: the primary must be writable and every replica's defaultdb must replicate it.
async fn check_systemdb(session: &Session, role: Role, primary_host: &str) -> StepResult<Outcomes> {
    let observed = session
        .call("observe", |c| async move { c.observe(false).await })
        .await?;
    let checked = match role {
        Role::Primary => plan::check_systemdb_primary(&observed),
        Role::Replica => plan::check_systemdb_replica(primary_host, &observed),
    };
    checked.map_err(|conflict| (Failure::Rejected, conflict.to_string()))?;
    Ok(vec![("defaultdb".to_string(), Outcome::Unchanged)])
}

/// Converges (database mode) or checks (systemdb mode) one node over `session`. Returns what was
/// applied, the outcomes and, on the primary, each database's transaction count before any change.
async fn converge_on(
    config: &Config,
    session: &Session,
    role: Role,
) -> StepResult<(Vec<Action>, Outcomes, BTreeMap<String, u64>)> {
    let spec = match &config.desired {
        Desired::Systemdb {
            primary_host_for_replicas,
        } => {
            let outcomes = check_systemdb(session, role, primary_host_for_replicas).await?;
            return Ok((Vec::new(), outcomes, BTreeMap::new()));
        }
        Desired::Database(spec) => spec,
    };
    let converged = match role {
        Role::Primary => {
            let desired = spec.primary_desired();
            let observed = session
                .call("observe", |c| async move { c.observe(true).await })
                .await?;
            let creates = plan::creates_databases(&desired, &observed);
            let held = if creates.is_empty() {
                BTreeMap::new()
            } else {
                held_by_replicas(
                    &config.topology,
                    &config.admin,
                    &creates,
                    &Logins::default(),
                )
                .await
            };
            let plan = |observed: &Observed| plan::plan_primary_guarded(&desired, observed, &held);
            converge_node(
                session,
                true,
                Some(observed),
                plan,
                &spec.replication.password,
            )
            .await?
        }
        Role::Replica => {
            let desired = spec.replica_desired(config.topology.grpc_port);
            let plan = |observed: &Observed| plan::plan_replica(&desired, observed);
            let converged = converge_node(session, false, None, plan, &Secret::default()).await?;
            let after = session
                .call("verify", |c| async move { c.observe(false).await })
                .await?;
            if let Some((database, problem)) =
                plan::replica_problems(&desired, &after).into_iter().next()
            {
                return Err((
                    Failure::Rejected,
                    format!("database '{database}': {problem}"),
                ));
            }
            converged
        }
    };
    let outcomes = node::outcomes(&names(spec), &converged.applied);
    let tx_counts = converged
        .before
        .databases
        .iter()
        .map(|d| (d.name.clone(), d.tx_count))
        .collect();
    Ok((converged.applied, outcomes, tx_counts))
}

/// The primary: ready, a session, converged.
async fn run_primary(
    config: &Config,
    waiting: Waiting,
    deadline: Instant,
) -> StepResult<(NodeRun, String, BTreeMap<String, u64>)> {
    let ready = joined(waiting)
        .await
        .map_err(|e| (Failure::NotReady, e.to_string()))?;
    let session = Session::open(
        &ready.client,
        &config.admin,
        "defaultdb",
        Bound::Until(deadline),
    )
    .await?;
    match converge_on(config, &session, Role::Primary).await {
        Ok((applied, outcomes, tx_counts)) => {
            let run = NodeRun {
                host: config.topology.primary.clone(),
                role: Role::Primary,
                session,
                applied,
                outcomes,
            };
            Ok((run, ready.version, tx_counts))
        }
        Err(failed) => {
            session.close().await;
            Err(failed)
        }
    }
}

/// One replica once it is ready and the primary is converged. Returns the replica's version
/// whenever it answered, for the version listing.
async fn run_replica(
    config: &Config,
    host: String,
    waiting: Waiting,
    primary_version: &str,
    catch_up: Option<&BTreeMap<String, u64>>,
    deadline: Instant,
) -> (Option<String>, StepResult<NodeRun>) {
    let ready = match joined(waiting).await {
        Ok(ready) => ready,
        Err(reason) => return (None, Err((Failure::NotReady, reason.to_string()))),
    };
    let version = Some(ready.version.clone());
    if ready.version != primary_version {
        let reason = format!(
            "runs immudb {} but the primary runs {primary_version}; replicas refuse a primary of another version",
            ready.version
        );
        return (version, Err((Failure::VersionMismatch, reason)));
    }
    let session = match Session::open(
        &ready.client,
        &config.admin,
        "defaultdb",
        Bound::Until(deadline),
    )
    .await
    {
        Ok(session) => session,
        Err(failed) => return (version, Err(failed)),
    };
    let converged = async {
        let result = converge_on(config, &session, Role::Replica).await?;
        let replicated: Vec<String> = match &config.desired {
            Desired::Database(spec) => names(spec),
            Desired::Systemdb { .. } => vec!["defaultdb".to_string()],
        };
        wait_for_replicators(&session, &ready, config.topology.metrics_port, &replicated).await?;
        if let Some(targets) = catch_up {
            wait_for_catch_up(&session, targets).await?;
        }
        Ok(result)
    }
    .await;
    match converged {
        Ok((applied, outcomes, _)) => (
            version,
            Ok(NodeRun {
                host,
                role: Role::Replica,
                session,
                applied,
                outcomes,
            }),
        ),
        Err(failed) => {
            session.close().await;
            (version, Err(failed))
        }
    }
}

/// Settings stored by updates take effect on load: reload them now (`immediately`), one node
/// at a time in the planned order, or report them as pending (`onReload`).
async fn apply_stored_settings(runs: &mut [NodeRun], apply: ApplySettings) {
    let Some(primary_index) = runs.iter().position(|r| r.role == Role::Primary) else {
        return;
    };
    let replicas: Vec<(String, Vec<Action>)> = runs
        .iter()
        .filter(|r| r.role == Role::Replica)
        .map(|r| (r.host.clone(), r.applied.clone()))
        .collect();
    let primary_actions = runs[primary_index].applied.clone();
    let primary_host = runs[primary_index].host.clone();
    let order: Vec<(String, Vec<String>)> =
        plan::reload_order((&primary_host, &primary_actions), &replicas)
            .into_iter()
            .map(|(host, dbs)| (host.to_string(), dbs))
            .collect();
    for (host, databases) in order {
        let run = runs
            .iter_mut()
            .find(|r| r.host == host)
            .expect("the reload order names converged nodes");
        for database in databases {
            let outcome = match apply {
                ApplySettings::OnReload => Outcome::UpdatedPendingReload,
                ApplySettings::Immediately => {
                    let span = node_span(run.role, &run.host);
                    let reloaded = async {
                        tracing::info!(%database, "reloading to apply the new settings");
                        let database = &database;
                        run.session
                            .call(
                                "reload",
                                |c| async move { c.reload_database(database).await },
                            )
                            .await
                    }
                    .instrument(span)
                    .await;
                    match reloaded {
                        Ok(()) => Outcome::Reloaded,
                        Err((failure, reason)) => Outcome::Failed { failure, reason },
                    }
                }
            };
            if let Some((_, slot)) = run.outcomes.iter_mut().find(|(db, _)| *db == database) {
                *slot = outcome;
            }
        }
    }
}

pub async fn converge(config: &Config) -> Report {
    let deadline = Instant::now() + config.timeout;
    let topology = &config.topology;
    let (primary_wait, replica_waits) = spawn_waits(topology, deadline, deadline);
    let mut report = Report::default();

    let primary = run_primary(config, primary_wait, deadline)
        .instrument(node_span(Role::Primary, &topology.primary))
        .await;
    let (primary_run, primary_version, tx_counts) = match primary {
        Ok(converged) => converged,
        Err((failure, reason)) => {
            report.lines.push(Line::failed(
                Role::Primary,
                &topology.primary,
                failure,
                reason,
            ));
            for (host, waiting) in replica_waits {
                waiting.abort();
                report.lines.push(Line::failed(
                    Role::Replica,
                    &host,
                    Failure::Skipped,
                    "skipped: the primary failed",
                ));
            }
            return report;
        }
    };
    report
        .versions
        .push((topology.primary.clone(), primary_version.clone()));
    let catch_up = config.wait_for_catch_up.then_some(tx_counts);

    let replicas = replica_waits.into_iter().map(|(host, waiting)| {
        let span = node_span(Role::Replica, &host);
        let (primary_version, catch_up) = (&primary_version, catch_up.as_ref());
        async move {
            let result = run_replica(
                config,
                host.clone(),
                waiting,
                primary_version,
                catch_up,
                deadline,
            )
            .await;
            (host, result)
        }
        .instrument(span)
    });
    let mut runs = vec![primary_run];
    let mut failed = Vec::new();
    for (host, (version, result)) in join_all(replicas).await {
        if let Some(version) = version {
            report.versions.push((host.clone(), version));
        }
        match result {
            Ok(run) => runs.push(run),
            Err((failure, reason)) => {
                failed.push(Line::failed(Role::Replica, &host, failure, reason))
            }
        }
    }
    if let Desired::Database(spec) = &config.desired {
        apply_stored_settings(&mut runs, spec.apply_settings).await;
    }
    for run in runs {
        report
            .lines
            .extend(lines(run.role, &run.host, run.outcomes));
        run.session.close().await;
    }
    report.lines.extend(failed);
    report
}

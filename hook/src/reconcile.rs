//! The I/O around the plan: wait for every node at once, converge the primary, then converge each
//! replica as soon as it is ready, and report per node and database.

use std::collections::BTreeMap;

use futures::future::join_all;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::client::{Client, RpcError};
use crate::config::{Config, Credentials, DatabaseReplication, Desired, Role, Secret, Topology};
use crate::plan::{self, Action, Observed, PrimaryDesired, ReplicaDesired};
use crate::report::{Failure, Line, Outcome, Report};
use crate::retry::{self, Retried};
use crate::wait::{self, ReadyNode, SystemResolver};

type Waiting = JoinHandle<Result<ReadyNode, String>>;

/// Starts waiting for every node concurrently, each in its own span.
pub fn spawn_waits(topology: &Topology, deadline: Instant) -> (Waiting, Vec<(String, Waiting)>) {
    let resolver = SystemResolver::new(topology);
    let spawn = |role: Role, host: &str| {
        let (resolver, topology, host) = (resolver.clone(), topology.clone(), host.to_string());
        let span = node_span(role, &host);
        tokio::spawn(
            async move { wait::wait_for(&resolver, &topology, &host, deadline).await }
                .instrument(span),
        )
    };
    let primary = spawn(Role::Primary, &topology.primary);
    let replicas = topology
        .replicas
        .iter()
        .map(|host| (host.clone(), spawn(Role::Replica, host)))
        .collect();
    (primary, replicas)
}

pub async fn joined(waiting: Waiting) -> Result<ReadyNode, String> {
    waiting
        .await
        .unwrap_or_else(|e| Err(format!("waiting task failed: {e}")))
}

/// A failed step: a permanent refusal fails fast, a transient error that outlasted the deadline
/// counts as "not ready".
pub fn step_failed(step: &str, error: Retried<RpcError>) -> (Failure, String) {
    let failure = match &error {
        Retried::Failed(_) => Failure::Rejected,
        Retried::Deadline { .. } => Failure::NotReady,
    };
    (failure, format!("{step}: {error}"))
}

/// One node's session for the whole run; closed at the end whatever happened.
pub struct Session {
    pub client: Client,
    deadline: Instant,
}

impl Session {
    pub async fn open(
        ready: &ReadyNode,
        who: &Credentials,
        database: &str,
        deadline: Instant,
    ) -> Result<Session, (Failure, String)> {
        // The connection that answered the readiness checks.
        let client = retry::until(deadline, || ready.client.open_session(who, database))
            .await
            .map_err(|e| step_failed("open session", e))?;
        Ok(Session { client, deadline })
    }

    pub async fn call<T, F, Fut>(&self, step: &str, call: F) -> Result<T, (Failure, String)>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RpcError>>,
    {
        retry::until(self.deadline, call)
            .await
            .map_err(|e| step_failed(step, e))
    }

    pub async fn close(self) {
        if let Err(error) = self.client.close_session().await {
            tracing::warn!(%error, "could not close the session; immudb reaps it after a few minutes");
        }
    }
}

/// Applies `actions` in order and returns the outcome for each database in `databases`.
async fn apply(
    session: &Session,
    databases: &[String],
    actions: &[Action],
    password: &Secret,
) -> Result<Vec<(String, Outcome)>, (Failure, String)> {
    for action in actions {
        tracing::info!(?action, "applying");
        session
            .call("apply", || session.client.apply(action, password))
            .await?;
    }
    Ok(databases
        .iter()
        .map(|db| {
            let touching: Vec<&Action> = actions.iter().filter(|a| a.database() == db).collect();
            let outcome = if touching
                .iter()
                .any(|a| matches!(a, Action::CreateDatabase { .. }))
            {
                Outcome::Created
            } else if touching.is_empty() {
                Outcome::Unchanged
            } else {
                Outcome::Updated
            };
            (db.clone(), outcome)
        })
        .collect())
}

fn lines(role: Role, host: &str, outcomes: Vec<(String, Outcome)>) -> Vec<Line> {
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

/// The primary's databases and replication user. Returns each database's transaction count as
/// observed before any change, the catch-up target.
async fn converge_primary(
    session: &Session,
    spec: &DatabaseReplication,
) -> Result<(Vec<(String, Outcome)>, BTreeMap<String, u64>), (Failure, String)> {
    let observed = session
        .call("observe", || session.client.observe(true))
        .await?;
    let desired = PrimaryDesired {
        databases: spec.databases.clone(),
        sync_acks: spec.sync_acks,
        replication_user: spec.replication.user.clone(),
    };
    let actions = plan::plan_primary(&desired, &observed)
        .map_err(|conflict| (Failure::Rejected, conflict.to_string()))?;
    tracing::info!(actions = actions.len(), "planned");
    let outcomes = apply(
        session,
        &spec.databases,
        &actions,
        &spec.replication.password,
    )
    .await?;
    let tx_counts = observed
        .databases
        .iter()
        .map(|d| (d.name.clone(), d.tx_count))
        .collect();
    Ok((outcomes, tx_counts))
}

async fn converge_replica(
    session: &Session,
    desired: &ReplicaDesired,
    catch_up: Option<&BTreeMap<String, u64>>,
) -> Result<Vec<(String, Outcome)>, (Failure, String)> {
    let observed = session
        .call("observe", || session.client.observe(false))
        .await?;
    let actions = plan::plan_replica(desired, &observed)
        .map_err(|conflict| (Failure::Rejected, conflict.to_string()))?;
    tracing::info!(actions = actions.len(), "planned");
    let mut outcomes = apply(session, &desired.databases, &actions, &Secret::default()).await?;
    let after = session
        .call("verify", || session.client.observe(false))
        .await?;
    for (database, problem) in plan::replica_problems(desired, &after) {
        let outcome = outcomes.iter_mut().find(|(db, _)| *db == database);
        if let Some((_, outcome)) = outcome {
            *outcome = Outcome::Failed {
                failure: Failure::Rejected,
                reason: problem,
            };
        }
    }
    if let Some(targets) = catch_up {
        wait_for_catch_up(session, targets).await?;
    }
    Ok(outcomes)
}

/// Polls until the replica holds at least the primary's transaction count for every database.
async fn wait_for_catch_up(
    session: &Session,
    targets: &BTreeMap<String, u64>,
) -> Result<(), (Failure, String)> {
    let behind = |observed: &Observed| -> Option<String> {
        targets.iter().find_map(|(db, target)| {
            let have = observed.database(db).map_or(0, |d| d.tx_count);
            (have < *target).then(|| format!("database '{db}' has {have} of {target} transactions"))
        })
    };
    let caught_up = || async {
        let observed = session.client.observe(false).await?;
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

/// systemdb mode: the primary must be writable and every replica's defaultdb must replicate it.
async fn check_systemdb(
    session: &Session,
    role: Role,
    primary_host: &str,
) -> Result<Vec<(String, Outcome)>, (Failure, String)> {
    let observed = session
        .call("observe", || session.client.observe(false))
        .await?;
    let checked = match role {
        Role::Primary => plan::check_systemdb_primary(&observed),
        Role::Replica => plan::check_systemdb_replica(primary_host, &observed),
    };
    checked.map_err(|conflict| (Failure::Rejected, conflict.to_string()))?;
    Ok(vec![("defaultdb".to_string(), Outcome::Unchanged)])
}

fn replica_desired(spec: &DatabaseReplication, grpc_port: u16) -> ReplicaDesired {
    ReplicaDesired {
        databases: spec.databases.clone(),
        primary_host: spec.primary_host_for_replicas.clone(),
        primary_port: u32::from(grpc_port),
        replication_user: spec.replication.user.clone(),
        replication_password: spec.replication.password.clone(),
        options: spec.options.clone(),
    }
}

type Outcomes = Vec<(String, Outcome)>;
type StepResult<T> = Result<T, (Failure, String)>;

/// The primary: ready, then converged (database mode) or checked (systemdb mode). Returns the
/// catch-up targets when the replicas should wait for them.
async fn run_primary(
    config: &Config,
    waiting: Waiting,
    deadline: Instant,
) -> StepResult<(ReadyNode, Outcomes, Option<BTreeMap<String, u64>>)> {
    let ready = joined(waiting).await.map_err(|e| (Failure::NotReady, e))?;
    let session = Session::open(&ready, &config.admin, "defaultdb", deadline).await?;
    let result = match &config.desired {
        Desired::Database(spec) => converge_primary(&session, spec)
            .await
            .map(|(outcomes, counts)| (outcomes, config.wait_for_catch_up.then_some(counts))),
        Desired::Systemdb { .. } => check_systemdb(&session, Role::Primary, "")
            .await
            .map(|outcomes| (outcomes, None)),
    };
    session.close().await;
    let (outcomes, catch_up) = result?;
    Ok((ready, outcomes, catch_up))
}

/// One replica once it is ready and the primary is converged. Returns the replica's version
/// whenever it answered, for the version listing.
async fn run_replica(
    config: &Config,
    waiting: Waiting,
    primary_version: &str,
    catch_up: Option<&BTreeMap<String, u64>>,
    deadline: Instant,
) -> (Option<String>, StepResult<Outcomes>) {
    let ready = match joined(waiting).await {
        Ok(ready) => ready,
        Err(reason) => return (None, Err((Failure::NotReady, reason))),
    };
    let version = Some(ready.version.clone());
    if ready.version != primary_version {
        let reason = format!(
            "runs immudb {} but the primary runs {primary_version}; replicas refuse a primary of another version",
            ready.version
        );
        return (version, Err((Failure::VersionMismatch, reason)));
    }
    let session = match Session::open(&ready, &config.admin, "defaultdb", deadline).await {
        Ok(session) => session,
        Err(failed) => return (version, Err(failed)),
    };
    let result = match &config.desired {
        Desired::Database(spec) => {
            let desired = replica_desired(spec, config.topology.grpc_port);
            converge_replica(&session, &desired, catch_up).await
        }
        Desired::Systemdb {
            primary_host_for_replicas,
        } => check_systemdb(&session, Role::Replica, primary_host_for_replicas).await,
    };
    session.close().await;
    (version, result)
}

pub fn node_span(role: Role, host: &str) -> tracing::Span {
    tracing::info_span!("node", %role, host = %host)
}

pub async fn converge(config: &Config) -> Report {
    let deadline = Instant::now() + config.timeout;
    let topology = &config.topology;
    let (primary_wait, replica_waits) = spawn_waits(topology, deadline);
    let mut report = Report::default();

    let primary = run_primary(config, primary_wait, deadline)
        .instrument(node_span(Role::Primary, &topology.primary))
        .await;
    let (primary_version, catch_up) = match primary {
        Ok((ready, outcomes, catch_up)) => {
            report
                .versions
                .push((topology.primary.clone(), ready.version.clone()));
            report
                .lines
                .extend(lines(Role::Primary, &topology.primary, outcomes));
            (ready.version, catch_up)
        }
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

    let replicas = replica_waits.into_iter().map(|(host, waiting)| {
        let span = node_span(Role::Replica, &host);
        let (primary_version, catch_up) = (&primary_version, catch_up.as_ref());
        async move {
            let (version, result) =
                run_replica(config, waiting, primary_version, catch_up, deadline).await;
            (host, version, result)
        }
        .instrument(span)
    });
    for (host, version, result) in join_all(replicas).await {
        if let Some(version) = version {
            report.versions.push((host.clone(), version));
        }
        match result {
            Ok(outcomes) => report.lines.extend(lines(Role::Replica, &host, outcomes)),
            Err((failure, reason)) => {
                report
                    .lines
                    .push(Line::failed(Role::Replica, &host, failure, reason))
            }
        }
    }
    report
}

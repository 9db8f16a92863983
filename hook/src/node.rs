//! The Job converging one node: observe, plan, apply, and again until the plan is empty. An agent
//! may act on the same node at once, so an action may find its work already done (a user that now
//! exists, a database created by the agent with other settings): the node is then observed and
//! planned again instead of failing.

use crate::client::{Client, RpcError};
use crate::plan::{Action, Conflict, Observed};
use crate::report::{Failure, Outcome, StepResult};
use crate::retry::Retried;
use crate::session::{step_failed, Session};
use crate::types::Secret;

/// Rounds before giving up on a node that keeps changing under the hook.
const MAX_ROUNDS: usize = 3;

/// What converging a node did: every action applied, and the node as first observed.
pub struct Converged {
    pub applied: Vec<Action>,
    pub before: Observed,
}

/// Another writer got there first: observe again rather than fail.
fn lost_a_race(error: &RpcError) -> bool {
    error.message.contains("already exists")
}

/// `observed`, when the caller already read the node, saves the first observation.
pub async fn converge_node(
    session: &Session,
    with_users: bool,
    mut observed: Option<Observed>,
    plan: impl Fn(&Observed) -> Result<Vec<Action>, Conflict>,
    password: &Secret,
) -> StepResult<Converged> {
    let observe = |c: Client| async move { c.observe(with_users).await };
    let mut before: Option<Observed> = None;
    let mut applied = Vec::new();
    for round in 1.. {
        let observed = match observed.take() {
            Some(observed) => observed,
            None => session.call("observe", observe).await?,
        };
        let actions =
            plan(&observed).map_err(|conflict| (Failure::Rejected, conflict.to_string()))?;
        let before = before.get_or_insert(observed);
        if actions.is_empty() {
            return Ok(Converged {
                applied,
                before: before.clone(),
            });
        }
        if round > MAX_ROUNDS {
            break;
        }
        tracing::info!(round, actions = actions.len(), "planned");
        for action in actions {
            tracing::info!(?action, "applying");
            let action = &action;
            match session
                .retry(|c| async move { c.apply(action, password).await })
                .await
            {
                Ok(()) => applied.push(action.clone()),
                Err(Retried::Failed(error)) if lost_a_race(&error) => {
                    tracing::info!(%error, "another writer changed the node; observing it again");
                    break;
                }
                Err(error) => return Err(step_failed("apply", error)),
            }
        }
    }
    Err((
        Failure::Rejected,
        format!("the node was still changing after {MAX_ROUNDS} rounds of converging"),
    ))
}

/// Each database's outcome from the actions applied to it.
pub fn outcomes(databases: &[String], applied: &[Action]) -> Vec<(String, Outcome)> {
    databases
        .iter()
        .map(|db| {
            let touching: Vec<&Action> = applied.iter().filter(|a| a.database() == db).collect();
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
        .collect()
}

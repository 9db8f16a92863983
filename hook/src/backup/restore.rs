//! `restore`: prove a whole chain first (SHA-256, every record, the Alh chain, every entry against
//! its eH, and `--expect-alh`) with nothing written; then create the database in the
//! external-replica form, replay every record with several replicateTx calls in flight (immudb
//! orders them), switch replica off, and prove that CurrentState equals the backup's last Alh.
//! `--timeout-seconds` bounds waiting for the server and each call, never the replay.

use std::sync::Arc;

use immudb_txlog::hex;
use tokio::time::Instant;
use tracing::Instrument;

use super::audit::{self, Audit};
use super::config::{RestoreConfig, RestoreTarget};
use super::replay_target;
use super::storage::Storage;
use super::walk::walk;
use super::{all_failed, integrity, line, storage_failed, StepResult};
use crate::client::transactions::State;
use crate::plan::{ObservedDatabase, ReplicationSettings};
use crate::report::{Failure, Report};
use crate::session::{Bound, Session};
use crate::transfer::ReplicatePipeline;
use crate::types::{Role, Setting};
use crate::wait::node_span;
use crate::wait::{self, ReadyNode, SystemResolver};

pub async fn restore(config: &RestoreConfig) -> Report {
    let Some(target) = &config.target else {
        return audit::verify_only(config).await;
    };
    let primary = &target.topology.primary;
    let names: Vec<String> = config
        .databases
        .iter()
        .map(|(_, into)| into.clone())
        .collect();
    let storage = match Storage::open(&config.storage, config.timeout) {
        Ok(storage) => storage,
        Err(e) => return all_failed(Role::Primary, primary, &names, storage_failed(e)),
    };
    let resolver = SystemResolver::new(&target.topology);
    let deadline = Instant::now() + config.timeout;
    let node = match wait::wait_for(&resolver, &target.topology, primary, deadline)
        .instrument(node_span(Role::Primary, primary))
        .await
    {
        Ok(ready) => ready,
        Err(reason) => {
            return all_failed(
                Role::Primary,
                primary,
                &names,
                (Failure::NotReady, reason.to_string()),
            )
        }
    };
    let server = Server {
        config,
        target,
        node: &node,
    };
    let mut report = Report::default();
    for (from, into) in &config.databases {
        let span = tracing::info_span!("restore", database = %into, from = %from);
        let result = server
            .restore_database(&storage, from, into)
            .instrument(span)
            .await;
        report
            .lines
            .push(line(Role::Primary, primary, into, result));
    }
    report
}

/// The target database as it is now: absent, or its state and its replication settings.
struct Existing {
    state: State,
    replication: ReplicationSettings,
}

/// The server a restore writes into, ready.
struct Server<'a> {
    config: &'a RestoreConfig,
    target: &'a RestoreTarget,
    node: &'a ReadyNode,
}

impl Server<'_> {
    /// A session on `database`, reopened if the server loses it during a long replay.
    async fn session(&self, database: &str) -> StepResult<Session> {
        Session::open(
            &self.node.client,
            &self.target.admin,
            database,
            Bound::EachCall(self.config.timeout),
        )
        .await
    }

    /// `into` as the admin's session `admin` lists it (None: no such database).
    async fn listed(admin: &Session, into: &str) -> StepResult<Option<ObservedDatabase>> {
        let listed = admin
            .call(
                "DatabaseListV2",
                |c| async move { c.list_databases().await },
            )
            .await?;
        Ok(listed.into_iter().find(|d| d.name == into))
    }

    async fn current_state(&self, into: &str) -> StepResult<State> {
        let session = self.session(into).await?;
        let state = session
            .call("CurrentState", |c| async move { c.current_state().await })
            .await;
        session.close().await;
        state
    }

    async fn observe(&self, into: &str) -> StepResult<Option<Existing>> {
        let admin = self.session("defaultdb").await?;
        let listed = Self::listed(&admin, into).await;
        admin.close().await;
        let Some(database) = listed? else {
            return Ok(None);
        };
        Ok(Some(Existing {
            state: self.current_state(into).await?,
            replication: database.replication,
        }))
    }

    async fn restore_database(
        &self,
        storage: &Storage,
        from: &str,
        into: &str,
    ) -> StepResult<String> {
        let primary = &self.target.topology.primary;
        let chain = audit::pick_chain(self.config, storage, from).await?;
        let end = audit::end_of(self.config, &chain, from)?;

        // Read-only look at the target first, so the verification pass knows which Alh to
        // remember.
        let existing = self.observe(into).await?;
        let have = existing.as_ref().map_or(0, |e| e.state.tx_id);
        if have > 0 && !self.config.append {
            return Err((
                Failure::Conflict,
                format!(
                    "database '{into}' on {primary} already holds {have} transactions: restore writes only into a new or empty database (--append continues one whose history the backup extends)",
                ),
            ));
        }
        if have > end {
            return Err((
                Failure::Conflict,
                format!("database '{into}' already holds {have} transactions, more than the backup's tx {end}"),
            ));
        }

        // Verification pass: nothing is written unless every byte up to `end` proves itself.
        let Audit {
            walked, remembered, ..
        } = audit::audit(storage, &chain, end, self.config.expect, have).await?;
        if let (Some(existing), Some(alh)) = (&existing, remembered) {
            if existing.state.alh != alh {
                return Err((
                    Failure::Conflict,
                    format!(
                        "database '{into}' ends at tx {have} with Alh {}, the backup has Alh {} there: its history is not the backup's",
                        hex(&existing.state.alh),
                        hex(&alh)
                    ),
                ));
            }
        }
        let end_alh = walked.end_alh;
        tracing::info!(chain = %chain.id, end, end_alh = %hex(&end_alh), entries = walked.entries, "the backup verified; restoring");

        // Write pass.
        let admin = self.session("defaultdb").await?;
        let before = existing.as_ref().map(|e| &e.replication);
        let prepared = replay_target::prepare(&admin, into, before).await;
        let started = std::time::Instant::now();
        let replayed = match prepared {
            Ok(()) => self.replay(&admin, storage, &chain, into, have, end).await,
            Err(failed) => Err(failed),
        };
        // Replica mode is switched off only after every record is in: a restore that stopped
        // halfway leaves a read-only database that `--append` continues.
        let promoted = match replayed {
            Ok(depth) => replay_target::finish(&admin, into, before)
                .await
                .map(|()| depth),
            Err((failure, reason)) => Err((
                failure,
                format!("{reason}; '{into}' stays read-only (replica mode): rerun with --append to continue"),
            )),
        };
        admin.close().await;
        let depth = promoted?;
        let seconds = started.elapsed().as_secs_f64();

        let state = self.current_state(into).await?;
        if state.tx_id != end || state.alh != end_alh {
            return Err(integrity(format!(
                "after the restore '{into}' reports tx {} with Alh {}, the backup tx {end} with Alh {}",
                state.tx_id,
                hex(&state.alh),
                hex(&end_alh)
            )));
        }
        tracing::info!(transactions = end - have, seconds, depth, "restored");
        Ok(format!(
            "restored tx {}..{end} from chain {} of '{from}' ({depth} replicateTx in flight); CurrentState txId {end} txHash {} matches the backup",
            have + 1,
            chain.id,
            hex(&end_alh)
        ))
    }

    /// How many replicateTx calls to keep in flight: `--pipeline-depth`, lowered to the target
    /// database's maxConcurrency, above which immudb refuses calls.
    async fn depth(&self, admin: &Session, into: &str) -> StepResult<usize> {
        let wanted = self.target.pipeline_depth;
        let max = Self::listed(admin, into)
            .await?
            .and_then(|d| d.storage.get(Setting::MaxConcurrency))
            .map_or(wanted, |m| m as usize);
        if max < wanted {
            tracing::warn!(
                pipeline_depth = wanted,
                max_concurrency = max,
                "the target database allows fewer concurrent transactions; lowering the pipeline depth"
            );
        }
        Ok(wanted.min(max).max(1))
    }

    /// Replays `have+1..=end` into `into`; returns the pipeline depth used.
    async fn replay(
        &self,
        admin: &Session,
        storage: &Storage,
        chain: &super::catalog::Chain,
        into: &str,
        have: u64,
        end: u64,
    ) -> StepResult<usize> {
        let depth = self.depth(admin, into).await?;
        let session = Arc::new(
            Session::open(
                &self.node.client,
                &self.target.admin,
                into,
                Bound::EachCall(self.config.timeout),
            )
            .await?,
        );
        let mut pipeline = ReplicatePipeline::new(session.clone(), depth);
        let walked = walk(storage, chain, end, &mut async |record| {
            if record.tx_id <= have {
                return Ok(());
            }
            pipeline
                .send(record.tx_id, record.checksum, record.content)
                .await
        })
        .await;
        let replayed = match walked {
            Ok(_) => pipeline.finish().await,
            Err(failed) => {
                drop(pipeline);
                Err(failed)
            }
        };
        session.close().await;
        replayed.map(|()| depth)
    }
}

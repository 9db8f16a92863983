//! The transaction calls of one double node: Set, TxById, CurrentState, exportTx and replicateTx,
//! with immudb's authorisation (a session or token on the database; Set needs ReadWrite, exportTx
//! and replicateTx Admin), its error texts, and its commit cost (`crate::commits`).

use std::pin::Pin;
use std::sync::Arc;

use immudb_txlog::{ExportedTx, TxHeader as Header};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::commits::{self, Commits, Slot, MAX_ACTIVE_EXCEEDED, MAX_ACTIVE_TRANSACTIONS};
use crate::proto::{
    Chunk, ExportTxRequest, ImmutableState, SetRequest, Tx, TxHeader, TxMetadata, TxRequest,
};
use crate::rules::{unknown, PERMISSION_ADMIN, PERMISSION_READ, PERMISSION_READ_WRITE};
use crate::server::Service;
use crate::state::{Database, State, CLOSED, READ_ONLY};

/// immudb's stream chunk size: messages travel in pieces of at most 64 KiB.
pub const CHUNK_SIZE: usize = 64 * 1024;

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, Status>> + Send>>;

pub fn header_to_proto(h: &Header) -> TxHeader {
    TxHeader {
        id: h.id,
        prev_alh: h.prev_alh.to_vec(),
        ts: h.ts,
        nentries: h.nentries as i32,
        e_h: h.eh.to_vec(),
        bl_tx_id: h.bl_tx_id,
        bl_root: h.bl_root.to_vec(),
        version: i32::from(h.version),
        metadata: Some(TxMetadata {
            truncated_tx_id: h.metadata.truncated_tx_id,
            extra: h.metadata.extra.clone(),
        }),
    }
}

/// The caller's database, when the caller holds at least `needed` on it.
fn authorised(
    state: &State,
    metadata: &tonic::metadata::MetadataMap,
    needed: u32,
) -> Result<String, Status> {
    let (user, db) = state.caller(metadata)?;
    if !state.databases.contains_key(&db) {
        return Err(unknown("database does not exist"));
    }
    if state.permission_on(&user, &db) < needed {
        return Err(Status::internal("permission denied"));
    }
    Ok(db)
}

/// [`authorised`], with the database to change.
fn authorised_mut<'a>(
    state: &'a mut State,
    metadata: &tonic::metadata::MetadataMap,
    needed: u32,
) -> Result<(String, &'a mut Database), Status> {
    let name = authorised(state, metadata, needed)?;
    let db = state
        .databases
        .get_mut(&name)
        .expect("authorised checked it exists");
    Ok((name, db))
}

pub async fn tx_by_id(
    service: &Service,
    request: Request<TxRequest>,
) -> Result<Response<Tx>, Status> {
    service.gate("TxById").await?;
    let state = service.state();
    let db = authorised(&state, request.metadata(), PERMISSION_READ)?;
    let id = request.into_inner().tx;
    let tx = state.databases[&db]
        .ledger
        .transaction(id)
        .ok_or_else(|| unknown("tx not found"))?;
    Ok(Response::new(Tx {
        header: Some(header_to_proto(&tx.header)),
    }))
}

pub async fn current_state(
    service: &Service,
    request: Request<()>,
) -> Result<Response<ImmutableState>, Status> {
    service.gate("CurrentState").await?;
    let state = service.state();
    let db = authorised(&state, request.metadata(), PERMISSION_READ)?;
    let ledger = &state.databases[&db].ledger;
    let (tx_id, alh) = ledger.state();
    let (precommitted_tx_id, precommitted_alh) = ledger.precommitted_state();
    Ok(Response::new(ImmutableState {
        db,
        tx_id,
        tx_hash: alh.to_vec(),
        precommitted_tx_id,
        precommitted_tx_hash: precommitted_alh.to_vec(),
    }))
}

/// Counts one call against an injected failure budget: Internal once it is spent.
fn take_budget(budget: &std::sync::Mutex<Option<usize>>, what: &str) -> Result<(), Status> {
    let mut budget = budget.lock().expect("faults lock");
    match budget.as_mut() {
        Some(0) => Err(Status::internal(format!("injected: {what}"))),
        Some(left) => {
            *left -= 1;
            Ok(())
        }
        None => Ok(()),
    }
}

pub async fn export_tx(
    service: &Service,
    request: Request<ExportTxRequest>,
) -> Result<Response<ChunkStream>, Status> {
    service.gate("exportTx").await?;
    let message = {
        let state = service.state();
        let db = authorised(&state, request.metadata(), PERMISSION_ADMIN)?;
        let request = request.into_inner();
        let ledger = &state.databases[&db].ledger;
        let tx = if request.allow_pre_committed {
            ledger.stored(request.tx)
        } else {
            ledger.transaction(request.tx)
        }
        .ok_or_else(|| unknown("tx not found"))?;
        take_budget(
            &service.faults.failing_exports_after,
            "the source failed while exporting",
        )?;
        tx.to_message()
    };
    let chunks: Vec<Result<Chunk, Status>> = message
        .chunks(CHUNK_SIZE)
        .map(|piece| {
            Ok(Chunk {
                content: piece.to_vec(),
                metadata: Default::default(),
            })
        })
        .collect();
    Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
}

/// Applies one exported transaction as immudb's store does (see [`crate::commits`]): a transaction
/// slot, the entries hash, the window of maxConcurrency transactions ahead of the last
/// precommitted one, then in order after its predecessor, and the answer once the syncer made
/// it durable.
pub async fn replicate_tx(
    service: &Service,
    request: Request<Streaming<Chunk>>,
) -> Result<Response<TxHeader>, Status> {
    service.gate("replicateTx").await?;
    let metadata = request.metadata().clone();
    let _in_flight = {
        let mut state = service.state();
        let (db_name, db) = authorised_mut(&mut state, &metadata, PERMISSION_ADMIN)?;
        Commits::call_started(db, &service.state, &db_name)
    };
    let mut stream = request.into_inner();
    let mut message = Vec::new();
    while let Some(chunk) = stream.message().await? {
        message.extend_from_slice(&chunk.content);
    }
    let tx = ExportedTx::from_message(&message)
        .map_err(|e| unknown(format!("illegal arguments: {e}")))?;
    take_budget(
        &service.faults.failing_replicates_after,
        "the target failed while replicating",
    )?;
    let id = tx.header.id;
    let weak = Arc::downgrade(&service.state);
    // The slot is given back by dropping it, which takes the state lock: never while holding it.
    let (db_name, admitted) = {
        let mut state = service.state();
        let (db_name, db) = authorised_mut(&mut state, &metadata, PERMISSION_ADMIN)?;
        if !db.replication.replica {
            return Err(unknown("database is not a replica"));
        }
        Commits::take_slot(db)?;
        let admitted = db
            .ledger
            .admit(&tx)
            .map_err(|e| unknown(e.message()))
            .and_then(|()| {
                if id > db.ledger.precommitted_id() + u64::from(db.effective.max_concurrency) {
                    Err(unknown(MAX_ACTIVE_EXCEEDED))
                } else {
                    Ok(())
                }
            });
        (db_name, admitted)
    };
    let slot = Slot {
        state: weak.clone(),
        database: db_name.clone(),
    };
    admitted?;
    commits::wait_until(&weak, &db_name, |db| {
        (db.ledger.precommitted_id() + 1 >= id).then_some(())
    })
    .await?;
    let header = {
        let mut state = service.state();
        let db = state
            .databases
            .get_mut(&db_name)
            .ok_or_else(|| unknown("database does not exist"))?;
        if db.ledger.tx_count() + MAX_ACTIVE_TRANSACTIONS <= db.ledger.precommitted_id() {
            return Err(unknown(MAX_ACTIVE_EXCEEDED));
        }
        let header = db
            .ledger
            .precommit_replicated(tx)
            .map_err(|e| unknown(e.message()))?;
        Commits::precommitted(db, &service.state, &db_name, &service.sync_cost);
        header
    };
    drop(slot);
    commits::replicated(&weak, &db_name, header.id).await?;
    Ok(Response::new(header_to_proto(&header)))
}

/// Precommits plain key-value entries, then answers once the database's syncer made them durable.
pub async fn set(
    service: &Service,
    request: Request<SetRequest>,
) -> Result<Response<TxHeader>, Status> {
    service.gate("Set").await?;
    let (db_name, header) = precommit_set(service, request)?;
    commits::committed(&Arc::downgrade(&service.state), &db_name, header.id).await?;
    // A process stopped while the commit completed answers once it resumes.
    service.faults.pause.wait().await;
    Ok(Response::new(header_to_proto(&header)))
}

/// Set's checks and its precommit: (database, header of the precommitted transaction).
fn precommit_set(
    service: &Service,
    request: Request<SetRequest>,
) -> Result<(String, Header), Status> {
    let mut state = service.state();
    let (user, db_name) = state.caller(request.metadata())?;
    if state.permission_on(&user, &db_name) < PERMISSION_READ_WRITE {
        return Err(unknown(
            "user does not have write permission on this database",
        ));
    }
    let server_replica = state.server_replica;
    let db = state
        .databases
        .get_mut(&db_name)
        .ok_or_else(|| unknown("database does not exist"))?;
    if !db.loaded {
        return Err(unknown(CLOSED));
    }
    if db.replication.replica || server_replica {
        return Err(unknown(READ_ONLY));
    }
    let kvs: Vec<(Vec<u8>, Vec<u8>)> = request
        .into_inner()
        .k_vs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    let header = db.ledger.precommit(&kvs);
    Commits::precommitted(db, &service.state, &db_name, &service.sync_cost);
    Ok((db_name, header))
}

//! The transaction calls that move histories (backups, restores, rebuild-primary and the
//! agent's hand-over of the primary role), on the shared immudb [`Client`]: a header by id, the
//! current state, a transaction exported and replicated as chunked stream messages, and the
//! settings of a replay target (`plan::replay`).

use immudb_txlog::{Hash, TxHeader, TxMetadata};

use super::convert;
use super::{Client, RpcError, SettingsRequest};
use crate::plan::replay;
use crate::plan::{ReplicationSettings, StorageSettings};
use crate::proto;

/// immudb's stream chunk size.
const CHUNK_SIZE: usize = 64 * 1024;

/// What `CurrentState` reports: the last committed transaction and its Alh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub tx_id: u64,
    pub alh: Hash,
}

fn malformed(call: &'static str, what: &str) -> RpcError {
    RpcError {
        call,
        code: tonic::Code::DataLoss,
        message: format!("the server sent a malformed {what}"),
    }
}

fn hash(call: &'static str, bytes: Vec<u8>, what: &str) -> Result<Hash, RpcError> {
    bytes.try_into().map_err(|_| malformed(call, what))
}

fn header_from_proto(h: proto::TxHeader) -> Result<TxHeader, RpcError> {
    const CALL: &str = "TxById";
    let metadata = h.metadata.unwrap_or_default();
    Ok(TxHeader {
        id: h.id,
        prev_alh: hash(CALL, h.prev_alh, "prevAlh")?,
        ts: h.ts,
        version: u16::try_from(h.version).map_err(|_| malformed(CALL, "version"))?,
        metadata: TxMetadata {
            truncated_tx_id: metadata.truncated_tx_id,
            extra: metadata.extra,
        },
        nentries: u32::try_from(h.nentries).map_err(|_| malformed(CALL, "nentries"))?,
        eh: hash(CALL, h.e_h, "eH")?,
        bl_tx_id: h.bl_tx_id,
        bl_root: hash(CALL, h.bl_root, "blRoot")?,
    })
}

/// CreateDatabaseV2 of a replay target ([`replay::replaying`] settings). Without ifNotExists:
/// a database that appeared since the target was looked at is refused, never replayed into.
pub fn replay_target_request(database: &str) -> proto::CreateDatabaseRequest {
    proto::CreateDatabaseRequest {
        name: database.to_string(),
        settings: Some(convert::settings_to_proto(
            Some(&replay::replaying()),
            &StorageSettings::default(),
        )),
        if_not_exists: false,
    }
}

impl Client {
    pub async fn tx_header(&self, tx: u64) -> Result<TxHeader, RpcError> {
        let request = self.request(proto::TxRequest { tx });
        let response = self
            .rpc()
            .tx_by_id(request)
            .await
            .map_err(|s| RpcError::from_status("TxById", s))?;
        let header = response
            .into_inner()
            .header
            .ok_or_else(|| malformed("TxById", "transaction without a header"))?;
        header_from_proto(header)
    }

    pub async fn current_state(&self) -> Result<State, RpcError> {
        let state = self.immutable_state().await?;
        Ok(State {
            tx_id: state.tx_id,
            alh: hash("CurrentState", state.tx_hash, "txHash")?,
        })
    }

    /// The last precommitted transaction and its Alh (the committed one when nothing waits for
    /// a commit): where a transaction replicated into the database must follow on.
    pub async fn precommitted_state(&self) -> Result<State, RpcError> {
        let state = self.immutable_state().await?;
        if state.precommitted_tx_id <= state.tx_id {
            return Ok(State {
                tx_id: state.tx_id,
                alh: hash("CurrentState", state.tx_hash, "txHash")?,
            });
        }
        Ok(State {
            tx_id: state.precommitted_tx_id,
            alh: hash(
                "CurrentState",
                state.precommitted_tx_hash,
                "precommittedTxHash",
            )?,
        })
    }

    async fn immutable_state(&self) -> Result<proto::ImmutableState, RpcError> {
        let request = self.request(());
        Ok(self
            .rpc()
            .current_state(request)
            .await
            .map_err(|s| RpcError::from_status("CurrentState", s))?
            .into_inner())
    }

    /// One transaction as the stream message exportTx sends (`u64 len || exported tx`).
    pub async fn export_tx(&self, tx: u64) -> Result<Vec<u8>, RpcError> {
        let request = self.request(proto::ExportTxRequest {
            tx,
            allow_pre_committed: false,
            skip_integrity_check: false,
        });
        let mut stream = self
            .rpc()
            .export_tx(request)
            .await
            .map_err(|s| RpcError::from_status("exportTx", s))?
            .into_inner();
        let mut message = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| RpcError::from_status("exportTx", s))?
        {
            message.extend_from_slice(&chunk.content);
        }
        Ok(message)
    }

    /// Applies one exported transaction (a whole stream message) to the session's database,
    /// which must be in replica mode; returns the header the server committed.
    pub async fn replicate_tx(&self, message: &[u8]) -> Result<TxHeader, RpcError> {
        let chunks: Vec<proto::Chunk> = message
            .chunks(CHUNK_SIZE)
            .map(|piece| proto::Chunk {
                content: piece.to_vec(),
                metadata: Default::default(),
            })
            .collect();
        let request = self.request(tokio_stream::iter(chunks));
        let header = self
            .rpc()
            .replicate_tx(request)
            .await
            .map_err(|s| RpcError::from_status("replicateTx", s))?
            .into_inner();
        header_from_proto(header).map_err(|e| RpcError {
            call: "replicateTx",
            ..e
        })
    }

    /// Creates `database` as a replay target.
    pub async fn create_replay_target(&self, database: &str) -> Result<(), RpcError> {
        self.send_settings(SettingsRequest::Create(replay_target_request(database)))
            .await
    }

    /// Sets `database`'s replication settings, changing nothing else.
    pub async fn set_replication(
        &self,
        database: &str,
        settings: &ReplicationSettings,
    ) -> Result<(), RpcError> {
        let request =
            convert::update_request(database, Some(settings), &StorageSettings::default());
        self.send_settings(SettingsRequest::Update(request)).await
    }
}

//! The immudb gRPC client: one connection and at most one session per node. Requests that carry a
//! password are built here and never logged; errors carry the call name, the gRPC code and the
//! server's text, none of which contains a secret. Part of the engine: it may import `plan`'s
//! types, `proto`, `retry`, `tls` and the leaf `types`.

pub mod convert;
pub mod transactions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::plan::failover::TxPosition;
use crate::plan::{Action, Observed, ObservedDatabase, ObservedUser, StorageSettings};
use crate::proto;
use crate::proto::immu_service_client::ImmuServiceClient;
use crate::retry::Transient;
use crate::tls::TrustedCa;
use crate::types::{Credentials, Secret};
pub use convert::SettingsRequest;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, thiserror::Error)]
#[error("{call}: {message} (gRPC {code:?})")]
pub struct RpcError {
    pub call: &'static str,
    pub code: Code,
    pub message: String,
}

impl RpcError {
    /// A condition expected to pass with time (replication lag), retried like Unavailable.
    pub fn pending(call: &'static str, message: String) -> RpcError {
        RpcError {
            call,
            code: Code::Unavailable,
            message,
        }
    }

    /// Nothing came back from immudb: the connection was refused or lost, or the call timed out.
    /// Anything else is immudb's own answer (a refusal, a full session table).
    pub fn unanswered(&self) -> bool {
        matches!(
            self.code,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
        )
    }

    pub(crate) fn from_status(call: &'static str, status: Status) -> RpcError {
        RpcError {
            call,
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

impl Transient for RpcError {
    /// Connection trouble and a full session table pass; immudb's application errors (Unknown
    /// with a text: bad credentials, permissions, invalid names or settings) do not.
    fn is_transient(&self) -> bool {
        match self.code {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted
            | Code::Aborted => true,
            Code::Internal => self.message.contains("max sessions number reached"),
            _ => false,
        }
    }
}

/// A node's gRPC server: the address its name resolved to, and the name, which TLS verifies.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub address: SocketAddr,
    pub tls: Option<TrustedCa>,
}

#[derive(Clone)]
pub struct Client {
    inner: ImmuServiceClient<Channel>,
    /// The server's name, for logs.
    host: Arc<str>,
    session: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Client {
    /// The connection is made on first use, so a refused connection surfaces as a transient
    /// Unavailable on the call and is retried like any other.
    pub fn new(target: &Target) -> Result<Client, RpcError> {
        let scheme = if target.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", target.address))
            .expect("a socket address is a valid URI")
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        if let Some(ca) = &target.tls {
            endpoint = endpoint
                .tls_config(ca.grpc(&target.host))
                .map_err(|e| RpcError {
                    call: "connect",
                    code: Code::InvalidArgument,
                    message: format!("TLS configuration for {}: {e}", target.host),
                })?;
        }
        Ok(Client {
            inner: ImmuServiceClient::new(endpoint.connect_lazy()),
            host: target.host.as_str().into(),
            session: None,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn rpc(&self) -> ImmuServiceClient<Channel> {
        self.inner.clone()
    }

    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(session) = &self.session {
            request.metadata_mut().insert("sessionid", session.clone());
        }
        request
    }

    pub async fn server_version(&self) -> Result<String, RpcError> {
        let request = self.request(proto::ServerInfoRequest {});
        let response = self
            .rpc()
            .server_info(request)
            .await
            .map_err(|s| RpcError::from_status("ServerInfo", s))?;
        Ok(response.into_inner().version)
    }

    /// Returns a client bound to a new session on `database`. In the binary only
    /// `session::Session` calls it, so that every session is reused and closed.
    pub async fn open_session(
        &self,
        who: &Credentials,
        database: &str,
    ) -> Result<Client, RpcError> {
        let request = Request::new(proto::OpenSessionRequest {
            username: who.user.as_bytes().to_vec(),
            password: who.password.expose().as_bytes().to_vec(),
            database_name: database.to_string(),
        });
        let response = self
            .rpc()
            .open_session(request)
            .await
            .map_err(|s| RpcError::from_status("OpenSession", s))?;
        let id = response.into_inner().session_id;
        let session = id.parse().map_err(|_| RpcError {
            call: "OpenSession",
            code: Code::Internal,
            message: "the server returned a session id that is not valid metadata".into(),
        })?;
        Ok(Client {
            inner: self.inner.clone(),
            host: self.host.clone(),
            session: Some(session),
        })
    }

    /// Ends the session; immudb keeps at most 100 and reaps idle ones only after minutes.
    pub async fn close_session(&self) -> Result<(), RpcError> {
        if self.session.is_none() {
            return Ok(());
        }
        let request = self.request(());
        self.rpc()
            .close_session(request)
            .await
            .map_err(|s| RpcError::from_status("CloseSession", s))?;
        Ok(())
    }

    pub async fn list_databases(&self) -> Result<Vec<ObservedDatabase>, RpcError> {
        let request = self.request(proto::DatabaseListRequestV2 {});
        let response = self
            .rpc()
            .database_list_v2(request)
            .await
            .map_err(|s| RpcError::from_status("DatabaseListV2", s))?;
        Ok(response
            .into_inner()
            .databases
            .into_iter()
            .map(convert::observed_database)
            .collect())
    }

    pub async fn list_users(&self) -> Result<Vec<ObservedUser>, RpcError> {
        let request = self.request(());
        let response = self
            .rpc()
            .list_users(request)
            .await
            .map_err(|s| RpcError::from_status("ListUsers", s))?;
        Ok(response
            .into_inner()
            .users
            .into_iter()
            .map(|u| ObservedUser {
                name: String::from_utf8_lossy(&u.user).to_string(),
                active: u.active,
                permissions: u
                    .permissions
                    .into_iter()
                    .map(|p| (p.database, p.permission))
                    .collect(),
            })
            .collect())
    }

    pub async fn observe(&self, with_users: bool) -> Result<Observed, RpcError> {
        let databases = self.list_databases().await?;
        let users = if with_users {
            self.list_users().await?
        } else {
            Vec::new()
        };
        Ok(Observed { databases, users })
    }

    /// Applies one planned action. `password` is the replication user's, for CreateUser.
    pub async fn apply(&self, action: &Action, password: &Secret) -> Result<(), RpcError> {
        match action {
            Action::CreateDatabase { .. } | Action::UpdateDatabase { .. } => {
                if let Some(request) = convert::settings_request(action) {
                    self.send_settings(request).await?;
                }
            }
            Action::ReloadDatabase { name } => self.reload_database(name).await?,
            Action::LoadDatabase { name } => self.load_database(name).await?,
            Action::WakeReplicator { name } => self.wake_replicator(name).await?,
            Action::CreateUser {
                user,
                database,
                permission,
            } => {
                let request = self.request(proto::CreateUserRequest {
                    user: user.as_bytes().to_vec(),
                    password: password.expose().as_bytes().to_vec(),
                    permission: *permission,
                    database: database.clone(),
                });
                self.rpc()
                    .create_user(request)
                    .await
                    .map_err(|s| RpcError::from_status("CreateUser", s))?;
            }
            Action::GrantPermission {
                user,
                database,
                permission,
            } => {
                let request = self.request(proto::ChangePermissionRequest {
                    action: proto::PermissionAction::Grant as i32,
                    username: user.clone(),
                    database: database.clone(),
                    permission: *permission,
                });
                self.rpc()
                    .change_permission(request)
                    .await
                    .map_err(|s| RpcError::from_status("ChangePermission", s))?;
            }
        }
        Ok(())
    }

    /// CreateDatabaseV2 or UpdateDatabaseV2 with `request`.
    pub async fn send_settings(&self, request: SettingsRequest) -> Result<(), RpcError> {
        match request {
            SettingsRequest::Create(create) => {
                self.rpc()
                    .create_database_v2(self.request(create))
                    .await
                    .map_err(|s| RpcError::from_status("CreateDatabaseV2", s))?;
            }
            SettingsRequest::Update(update) => {
                self.rpc()
                    .update_database_v2(self.request(update))
                    .await
                    .map_err(|s| RpcError::from_status("UpdateDatabaseV2", s))?;
            }
        }
        Ok(())
    }

    /// Restarts `name`'s replicator, ending its retry sleep: immudb stops and starts it for any
    /// UpdateDatabaseV2 that carries replication settings, and empty ones change nothing stored
    /// (immudb 1.11.1 pkg/server/server.go, `UpdateDatabaseV2`; db_options.go, `overwriteWith`
    /// keeps every unset field of a replica). Unlike a field set to its current value, it cannot
    /// turn a database that was promoted meanwhile back into a replica. The response carries the
    /// replication password and is dropped unread.
    pub async fn wake_replicator(&self, name: &str) -> Result<(), RpcError> {
        let request = self.request(proto::UpdateDatabaseRequest {
            database: name.to_string(),
            settings: Some(proto::DatabaseNullableSettings {
                replication_settings: Some(proto::ReplicationNullableSettings::default()),
                ..Default::default()
            }),
        });
        self.rpc()
            .update_database_v2(request)
            .await
            .map_err(|s| RpcError::from_status("UpdateDatabaseV2", s))?;
        Ok(())
    }

    /// Unload then load: immudb applies stored settings and restarts the replicator on load.
    pub async fn reload_database(&self, name: &str) -> Result<(), RpcError> {
        self.unload_database(name).await?;
        self.load_database(name).await
    }

    pub async fn unload_database(&self, name: &str) -> Result<(), RpcError> {
        let request = self.request(proto::UnloadDatabaseRequest {
            database: name.to_string(),
        });
        self.rpc()
            .unload_database(request)
            .await
            .map_err(|s| RpcError::from_status("UnloadDatabase", s))?;
        Ok(())
    }

    pub async fn load_database(&self, name: &str) -> Result<(), RpcError> {
        let request = self.request(proto::LoadDatabaseRequest {
            database: name.to_string(),
        });
        self.rpc()
            .load_database(request)
            .await
            .map_err(|s| RpcError::from_status("LoadDatabase", s))?;
        Ok(())
    }

    /// The stored settings of the session's database.
    pub async fn database_settings(&self) -> Result<StorageSettings, RpcError> {
        let request = self.request(proto::DatabaseSettingsRequest {});
        let response = self
            .rpc()
            .get_database_settings_v2(request)
            .await
            .map_err(|s| RpcError::from_status("GetDatabaseSettingsV2", s))?;
        Ok(convert::storage_from_proto(
            response.into_inner().settings.as_ref(),
        ))
    }

    /// Points the session at `database` (immudb keeps one database per session).
    pub async fn use_database(&self, database: &str) -> Result<(), RpcError> {
        let request = self.request(proto::Database {
            database_name: database.to_string(),
        });
        self.rpc()
            .use_database(request)
            .await
            .map_err(|s| RpcError::from_status("UseDatabase", s))?;
        Ok(())
    }

    /// The session database's committed and precommitted transactions, and the committed one's
    /// Alh (CurrentState): what failover compares between pods.
    pub async fn position(&self) -> Result<(TxPosition, [u8; 32]), RpcError> {
        let state = self
            .rpc()
            .current_state(self.request(()))
            .await
            .map_err(|s| RpcError::from_status("CurrentState", s))?
            .into_inner();
        let alh = state.tx_hash.try_into().map_err(|_| RpcError {
            call: "CurrentState",
            code: Code::DataLoss,
            message: "the server sent a malformed txHash".into(),
        })?;
        let position = TxPosition {
            committed: state.tx_id,
            precommitted: state.precommitted_tx_id.max(state.tx_id),
        };
        Ok((position, alh))
    }

    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<u64, RpcError> {
        let request = self.request(proto::SetRequest {
            k_vs: vec![proto::KeyValue {
                key: key.to_vec(),
                value: value.to_vec(),
            }],
            no_wait: false,
        });
        let response = self
            .rpc()
            .set(request)
            .await
            .map_err(|s| RpcError::from_status("Set", s))?;
        Ok(response.into_inner().id)
    }

    pub async fn get(&self, key: &[u8]) -> Result<Vec<u8>, RpcError> {
        let request = self.request(proto::KeyRequest {
            key: key.to_vec(),
            at_tx: 0,
            since_tx: 0,
            no_wait: true,
        });
        let response = self
            .rpc()
            .get(request)
            .await
            .map_err(|s| RpcError::from_status("Get", s))?;
        Ok(response.into_inner().value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passing_failures_are_transient() {
        let error = |code, message: &str| RpcError {
            call: "X",
            code,
            message: message.into(),
        };
        assert!(error(Code::Unavailable, "connection refused").is_transient());
        assert!(error(
            Code::Internal,
            "can not create new session: max sessions number reached"
        )
        .is_transient());
        assert!(!error(Code::Unknown, "invalid user name or password").is_transient());
        assert!(!error(Code::InvalidArgument, "illegal arguments").is_transient());
        assert!(!error(Code::Internal, "database is reserved").is_transient());
        assert!(!error(Code::PermissionDenied, "session not found").is_transient());
    }
}

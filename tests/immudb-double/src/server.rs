//! The gRPC side of one double node: authentication, sessions and the admin and key-value calls,
//! each enforcing the rules a real immudb enforces.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status, Streaming};

use crate::commits::SyncCost;
use crate::faults::Faults;
use crate::options::DbOptions;
use crate::proto::immu_service_server::ImmuService;
use crate::proto::*;
use crate::rules::{self, unknown, PERMISSION_ADMIN, PERMISSION_SYS_ADMIN};
use crate::state::{Database, State, User, ADMIN_USER, CLOSED, SYSTEM_DB};
use crate::transactions;

#[derive(Clone)]
pub struct Service {
    pub state: Arc<Mutex<State>>,
    pub faults: Arc<Faults>,
    pub max_sessions: usize,
    pub sync_cost: SyncCost,
}

impl Service {
    /// What every call meets first: a stopped node, latency, the injected faults. `rpc` is the
    /// call's name as the proto spells it.
    pub(crate) async fn gate(&self, rpc: &str) -> Result<(), Status> {
        self.faults.pause.wait().await;
        if self.faults.stopped.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the server is stopped"));
        }
        if !self.faults.latency.is_zero() {
            tokio::time::sleep(self.faults.latency).await;
        }
        let take =
            self.faults
                .unavailable_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if take.is_ok() {
            return Err(Status::unavailable("injected: server is starting"));
        }
        let calls = self.faults.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let every = *self.faults.reap_sessions_every.lock().expect("faults lock");
        if every.is_some_and(|n| n > 0 && calls.is_multiple_of(n)) {
            let mut state = self.state();
            let reaped = state.sessions.len();
            state.lose_sessions();
            self.faults
                .sessions_reaped
                .fetch_add(reaped, Ordering::SeqCst);
        }
        if let Some(status) = self.faults.refused.lock().expect("faults lock").get(rpc) {
            return Err(status.clone());
        }
        Ok(())
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("double state lock")
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tonic::async_trait]
impl ImmuService for Service {
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        self.gate("Login").await?;
        let r = request.into_inner();
        let mut state = self.state();
        state.logins += 1;
        let user = state.check_credentials(&r.user, &r.password)?;
        let token = new_id();
        state.tokens.insert(token.clone(), user);
        Ok(Response::new(LoginResponse {
            token,
            warning: Vec::new(),
        }))
    }

    async fn open_session(
        &self,
        request: Request<OpenSessionRequest>,
    ) -> Result<Response<OpenSessionResponse>, Status> {
        self.gate("OpenSession").await?;
        let r = request.into_inner();
        let mut state = self.state();
        state.logins += 1;
        let user = state.check_credentials(&r.username, &r.password)?;
        let db = r.database_name.to_ascii_lowercase();
        if !state.databases.contains_key(&db) && db != SYSTEM_DB {
            return Err(unknown("database does not exist"));
        }
        if state.permission_on(&user, &db) == 0 {
            return Err(Status::permission_denied(
                "Logged in user does not have permission on this database",
            ));
        }
        if state.sessions.len() >= self.max_sessions {
            return Err(Status::internal(
                "can not create new session: max sessions number reached",
            ));
        }
        let id = new_id();
        state.sessions.insert(id.clone(), (user, db));
        state.sessions_opened += 1;
        Ok(Response::new(OpenSessionResponse {
            session_id: id,
            server_uuid: "double".to_string(),
        }))
    }

    async fn close_session(&self, request: Request<()>) -> Result<Response<()>, Status> {
        self.gate("CloseSession").await?;
        let mut state = self.state();
        let id = request
            .metadata()
            .get("sessionid")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unknown("not logged in"))?
            .to_string();
        state
            .sessions
            .remove(&id)
            .ok_or_else(|| Status::permission_denied("session not found"))?;
        state.sessions_closed += 1;
        Ok(Response::new(()))
    }

    async fn server_info(
        &self,
        _request: Request<ServerInfoRequest>,
    ) -> Result<Response<ServerInfoResponse>, Status> {
        self.gate("ServerInfo").await?;
        let state = self.state();
        let visible = state.databases.len() as i32;
        Ok(Response::new(ServerInfoResponse {
            version: state.version.clone(),
            started_at: 0,
            num_transactions: state.databases.values().map(|d| d.tx_count() as i64).sum(),
            num_databases: visible,
            databases_disk_size: 0,
        }))
    }

    async fn create_database_v2(
        &self,
        request: Request<CreateDatabaseRequest>,
    ) -> Result<Response<CreateDatabaseResponse>, Status> {
        self.gate("CreateDatabaseV2").await?;
        let mut state = self.state();
        let (user, _) = state.caller(request.metadata())?;
        state.require_sys_admin(&user)?;
        state.require_writable_server()?;
        let r = request.into_inner();
        let name = rules::database_name(&r.name)?;
        if let Some(existing) = state.databases.get(&name) {
            if !r.if_not_exists {
                return Err(unknown("database already exists"));
            }
            return Ok(Response::new(CreateDatabaseResponse {
                name,
                settings: Some(State::settings_of(existing)),
                already_existed: true,
            }));
        }
        let options = DbOptions::created(&name, r.settings.as_ref())?;
        let mut db = Database {
            replication: options.replication,
            loaded: true,
            effective: options.storage.clone(),
            settings: options.storage,
            ..Default::default()
        };
        db.reset_allowance();
        db.start_replicator();
        let settings = State::settings_of(&db);
        state.databases.insert(name.clone(), db);
        Ok(Response::new(CreateDatabaseResponse {
            name,
            settings: Some(settings),
            already_existed: false,
        }))
    }

    async fn update_database_v2(
        &self,
        request: Request<UpdateDatabaseRequest>,
    ) -> Result<Response<UpdateDatabaseResponse>, Status> {
        self.gate("UpdateDatabaseV2").await?;
        let mut state = self.state();
        let (user, _) = state.caller(request.metadata())?;
        let r = request.into_inner();
        let name = rules::database_name(&r.database)?;
        if state.permission_on(&user, &name) < PERMISSION_ADMIN {
            return Err(unknown(
                "loggedin user does not have permissions for this operation",
            ));
        }
        state.require_writable_server()?;
        let db = state
            .databases
            .get_mut(&name)
            .ok_or_else(|| unknown("database does not exist"))?;
        let stored = DbOptions {
            replication: db.replication.clone(),
            storage: db.settings.clone(),
        };
        let next = stored.updated(&name, r.settings.as_ref())?;
        // Stored now; the running database keeps `effective` until it is loaded again.
        if !self.faults.storage_updates_ignored.load(Ordering::SeqCst) {
            db.settings = next.storage;
        }
        db.set_replication(next.replication);
        let carries_replication = r
            .settings
            .as_ref()
            .is_some_and(|s| s.replication_settings.is_some());
        if carries_replication {
            // immudb stops the replicator and starts it again with the new settings.
            db.start_replicator();
        }
        Ok(Response::new(UpdateDatabaseResponse {
            database: name,
            settings: Some(State::settings_of(db)),
        }))
    }

    async fn database_list_v2(
        &self,
        request: Request<DatabaseListRequestV2>,
    ) -> Result<Response<DatabaseListResponseV2>, Status> {
        self.gate("DatabaseListV2").await?;
        let state = self.state();
        let (user, _) = state.caller(request.metadata())?;
        let databases = state
            .databases
            .iter()
            .filter(|(name, _)| state.permission_on(&user, name) > 0)
            .map(|(name, db)| DatabaseInfo {
                name: name.clone(),
                settings: Some(State::settings_of(db)),
                loaded: db.loaded,
                disk_size: 0,
                num_transactions: db.tx_count(),
                created_at: 0,
                created_by: ADMIN_USER.to_string(),
            })
            .collect();
        Ok(Response::new(DatabaseListResponseV2 { databases }))
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<()>, Status> {
        self.gate("CreateUser").await?;
        let mut state = self.state();
        let (caller, _) = state.caller(request.metadata())?;
        state.require_writable_server()?;
        let r = request.into_inner();
        let name = String::from_utf8_lossy(&r.user).to_string();
        rules::username(&name)?;
        let db = state.administered_database(&caller, &r.database)?;
        rules::permission(r.permission)?;
        if state.users.contains_key(&name) {
            return Err(unknown("user already exists"));
        }
        state.users.insert(
            name,
            User {
                password: String::from_utf8_lossy(&r.password).to_string(),
                permissions: BTreeMap::from([(db, r.permission)]),
                active: true,
                sys_admin: false,
            },
        );
        Ok(Response::new(()))
    }

    async fn change_permission(
        &self,
        request: Request<ChangePermissionRequest>,
    ) -> Result<Response<()>, Status> {
        self.gate("ChangePermission").await?;
        let mut state = self.state();
        let (caller, _) = state.caller(request.metadata())?;
        state.require_writable_server()?;
        let r = request.into_inner();
        let db = state.administered_database(&caller, &r.database)?;
        rules::permission(r.permission)?;
        let user = state
            .users
            .get_mut(&r.username)
            .ok_or_else(|| unknown("user not found"))?;
        if r.action == PermissionAction::Revoke as i32 {
            user.permissions.remove(&db);
        } else {
            user.permissions.insert(db, r.permission);
        }
        Ok(Response::new(()))
    }

    async fn list_users(&self, request: Request<()>) -> Result<Response<UserList>, Status> {
        self.gate("ListUsers").await?;
        let state = self.state();
        let (caller, _) = state.caller(request.metadata())?;
        let visible_to_caller = |name: &String| {
            state.permission_on(&caller, SYSTEM_DB) == PERMISSION_SYS_ADMIN || *name == caller
        };
        let users = state
            .users
            .iter()
            .filter(|(name, _)| visible_to_caller(name))
            .map(|(name, u)| User_ {
                user: name.as_bytes().to_vec(),
                permissions: u
                    .permissions
                    .iter()
                    .map(|(database, permission)| Permission {
                        database: database.clone(),
                        permission: *permission,
                    })
                    .collect(),
                createdby: ADMIN_USER.to_string(),
                createdat: String::new(),
                active: u.active,
            })
            .collect();
        Ok(Response::new(UserList { users }))
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<TxHeader>, Status> {
        transactions::set(self, request).await
    }

    async fn get(&self, request: Request<KeyRequest>) -> Result<Response<Entry>, Status> {
        self.gate("Get").await?;
        let state = self.state();
        let (_, db) = state.session_database(request.metadata())?;
        let key = request.into_inner().key;
        let (tx, value) = db
            .ledger
            .get(&key)
            .ok_or_else(|| unknown("key not found"))?;
        Ok(Response::new(Entry { tx, key, value }))
    }

    async fn use_database(
        &self,
        request: Request<Database_>,
    ) -> Result<Response<UseDatabaseReply>, Status> {
        self.gate("UseDatabase").await?;
        let mut state = self.state();
        let (user, _) = state.caller(request.metadata())?;
        let session = request
            .metadata()
            .get("sessionid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let wanted = request.into_inner().database_name.to_ascii_lowercase();
        let db = state
            .databases
            .get(&wanted)
            .ok_or_else(|| Status::not_found(format!("'{wanted}' does not exist")))?;
        if !db.loaded {
            return Err(unknown(CLOSED));
        }
        if state.permission_on(&user, &wanted) == 0 {
            return Err(Status::permission_denied(
                "Logged in user does not have permission on this database",
            ));
        }
        // A session now works on the chosen database; tokens stay bound to defaultdb here.
        if let Some(binding) = session.and_then(|id| state.sessions.get_mut(&id)) {
            binding.1 = wanted;
        }
        Ok(Response::new(UseDatabaseReply {
            token: String::new(),
        }))
    }

    async fn keep_alive(&self, request: Request<()>) -> Result<Response<()>, Status> {
        self.gate("KeepAlive").await?;
        self.state().caller(request.metadata())?;
        Ok(Response::new(()))
    }

    async fn get_database_settings_v2(
        &self,
        request: Request<DatabaseSettingsRequest>,
    ) -> Result<Response<DatabaseSettingsResponse>, Status> {
        self.gate("GetDatabaseSettingsV2").await?;
        let state = self.state();
        let (_, db_name) = state.caller(request.metadata())?;
        let db = state
            .databases
            .get(&db_name)
            .ok_or_else(|| unknown("database does not exist"))?;
        Ok(Response::new(DatabaseSettingsResponse {
            database: db_name.clone(),
            settings: Some(State::settings_of(db)),
        }))
    }

    async fn unload_database(
        &self,
        request: Request<UnloadDatabaseRequest>,
    ) -> Result<Response<UnloadDatabaseResponse>, Status> {
        self.gate("UnloadDatabase").await?;
        let mut state = self.state();
        let database = request.get_ref().database.clone();
        let db = state.database_to_load(request.metadata(), &database)?;
        if !db.loaded {
            return Err(unknown(CLOSED));
        }
        db.loaded = false;
        db.stop_replicator();
        db.commits.restart();
        Ok(Response::new(UnloadDatabaseResponse { database }))
    }

    async fn load_database(
        &self,
        request: Request<LoadDatabaseRequest>,
    ) -> Result<Response<LoadDatabaseResponse>, Status> {
        self.gate("LoadDatabase").await?;
        let mut state = self.state();
        let database = request.get_ref().database.clone();
        let db = state.database_to_load(request.metadata(), &database)?;
        if db.loaded {
            return Err(unknown("database already loaded"));
        }
        db.loaded = true;
        db.effective = db.settings.clone();
        db.commits.restart();
        db.reset_allowance();
        db.start_replicator();
        db.last_loaded = Some(std::time::Instant::now());
        Ok(Response::new(LoadDatabaseResponse { database }))
    }

    async fn tx_by_id(&self, request: Request<TxRequest>) -> Result<Response<Tx>, Status> {
        transactions::tx_by_id(self, request).await
    }

    async fn current_state(
        &self,
        request: Request<()>,
    ) -> Result<Response<ImmutableState>, Status> {
        transactions::current_state(self, request).await
    }

    type exportTxStream = transactions::ChunkStream;

    async fn export_tx(
        &self,
        request: Request<ExportTxRequest>,
    ) -> Result<Response<Self::exportTxStream>, Status> {
        transactions::export_tx(self, request).await
    }

    async fn replicate_tx(
        &self,
        request: Request<Streaming<Chunk>>,
    ) -> Result<Response<TxHeader>, Status> {
        transactions::replicate_tx(self, request).await
    }
}

/// The generated `User` message, renamed here so it does not clash with the stored user.
type User_ = crate::proto::User;
/// The generated `Database` message (UseDatabase's argument), beside the stored database.
type Database_ = crate::proto::Database;

//! The gRPC side of one double node: authentication, sessions and the admin and key-value calls,
//! each enforcing the rules a real immudb enforces.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::proto::immu_service_server::ImmuService;
use crate::proto::*;
use crate::rules::{self, unknown, Replication, PERMISSION_ADMIN, PERMISSION_SYS_ADMIN};
use crate::storage::Storage;

pub const ADMIN_USER: &str = "immudb";
const DEFAULT_DB: &str = "defaultdb";
const SYSTEM_DB: &str = "systemdb";
const READ_ONLY: &str = "database is read-only because it's a replica";
const CLOSED: &str = "already closed";

#[derive(Clone, Debug, Default)]
pub struct Database {
    pub replication: Replication,
    pub loaded: bool,
    pub tx_count: u64,
    pub entries: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    /// Storage settings as stored (what DatabaseListV2 and GetDatabaseSettingsV2 show).
    pub settings: Storage,
    /// The settings the database runs with: those stored when it was last loaded.
    pub effective: Storage,
    /// When LoadDatabase last loaded it, for tests that check the order of reloads.
    pub last_loaded: Option<std::time::Instant>,
}

#[derive(Clone, Debug)]
pub struct User {
    pub password: String,
    pub permissions: BTreeMap<String, u32>,
    pub active: bool,
    pub sys_admin: bool,
}

/// Everything one server keeps in memory. Sessions and tokens belong to this server only.
#[derive(Debug, Default)]
pub struct State {
    pub databases: BTreeMap<String, Database>,
    pub users: BTreeMap<String, User>,
    sessions: HashMap<String, (String, String)>,
    tokens: HashMap<String, String>,
    /// Set in systemdb replication mode: the whole server is a read-only replica.
    pub server_replica: bool,
}

impl State {
    pub fn new(admin_password: &str) -> State {
        let mut state = State::default();
        state.users.insert(
            ADMIN_USER.to_string(),
            User {
                password: admin_password.to_string(),
                permissions: BTreeMap::new(),
                active: true,
                sys_admin: true,
            },
        );
        state.databases.insert(
            DEFAULT_DB.to_string(),
            Database {
                loaded: true,
                ..Default::default()
            },
        );
        state
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    fn check_credentials(&self, username: &[u8], password: &[u8]) -> Result<String, Status> {
        let name = String::from_utf8_lossy(username).to_string();
        let user = self
            .users
            .get(&name)
            .filter(|u| u.password.as_bytes() == password)
            .ok_or_else(|| unknown("invalid user name or password"))?;
        if !user.active {
            return Err(unknown("user is not active"));
        }
        Ok(name)
    }

    fn permission_on(&self, user: &str, db: &str) -> u32 {
        match self.users.get(user) {
            Some(u) if u.sys_admin => PERMISSION_SYS_ADMIN,
            Some(u) => u.permissions.get(db).copied().unwrap_or(0),
            None => 0,
        }
    }

    /// Resolves the caller from `sessionid` or `authorization: Bearer` metadata.
    fn caller(&self, metadata: &MetadataMap) -> Result<(String, String), Status> {
        if let Some(id) = metadata.get("sessionid").and_then(|v| v.to_str().ok()) {
            return self
                .sessions
                .get(id)
                .cloned()
                .ok_or_else(|| Status::permission_denied("session not found"));
        }
        if let Some(auth) = metadata.get("authorization").and_then(|v| v.to_str().ok()) {
            let token = auth.trim_start_matches("Bearer ").trim();
            return self
                .tokens
                .get(token)
                .map(|user| (user.clone(), DEFAULT_DB.to_string()))
                .ok_or_else(|| Status::internal("invalid token"));
        }
        Err(unknown("not logged in"))
    }

    fn require_sys_admin(&self, user: &str) -> Result<(), Status> {
        if self.permission_on(user, SYSTEM_DB) == PERMISSION_SYS_ADMIN {
            Ok(())
        } else {
            Err(unknown(
                "loggedin user does not have permissions for this operation",
            ))
        }
    }

    /// User management on a database: it must exist and the caller must administer it.
    fn administered_database(&self, caller: &str, database: &str) -> Result<String, Status> {
        let db = database.to_ascii_lowercase();
        if !self.databases.contains_key(&db) {
            return Err(unknown(format!("database {database} does not exist")));
        }
        if self.permission_on(caller, &db) < PERMISSION_ADMIN {
            return Err(unknown(
                "loggedin user does not have permissions for this operation",
            ));
        }
        Ok(db)
    }

    fn require_writable_server(&self) -> Result<(), Status> {
        if self.server_replica {
            Err(unknown(READ_ONLY))
        } else {
            Ok(())
        }
    }

    fn settings_of(db: &Database) -> DatabaseNullableSettings {
        let mut settings = DatabaseNullableSettings {
            replication_settings: Some(db.replication.to_nullable()),
            autoload: Some(NullableBool { value: true }),
            ..Default::default()
        };
        db.settings.fill(&mut settings);
        settings
    }

    /// LoadDatabase and UnloadDatabase: the caller administers `database`, which exists and is
    /// not reserved.
    fn database_to_load(
        &mut self,
        metadata: &MetadataMap,
        database: &str,
    ) -> Result<&mut Database, Status> {
        let (user, _) = self.caller(metadata)?;
        let name = rules::database_name(database)?;
        if self.permission_on(&user, &name) < PERMISSION_ADMIN {
            return Err(unknown(format!(
                "the database '{database}' does not exist or you do not have admin permission on this database"
            )));
        }
        self.databases
            .get_mut(&name)
            .ok_or_else(|| unknown("database does not exist"))
    }

    /// The session's database, which must be loaded.
    fn session_database(&self, metadata: &MetadataMap) -> Result<(String, &Database), Status> {
        let (user, db_name) = self.caller(metadata)?;
        let db = self
            .databases
            .get(&db_name)
            .ok_or_else(|| unknown("database does not exist"))?;
        if !db.loaded {
            return Err(unknown(CLOSED));
        }
        Ok((user, db))
    }
}

/// Fault injection and timing shared by every call of one node.
#[derive(Debug, Default)]
pub struct Faults {
    pub latency: Duration,
    /// The first this many calls answer Unavailable, like a server that is still starting.
    pub unavailable_first: AtomicUsize,
}

#[derive(Clone)]
pub struct Service {
    pub state: Arc<Mutex<State>>,
    pub faults: Arc<Faults>,
    pub version: String,
    pub max_sessions: usize,
}

impl Service {
    async fn gate(&self) -> Result<(), Status> {
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
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
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
        self.gate().await?;
        let r = request.into_inner();
        let mut state = self.state();
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
        self.gate().await?;
        let r = request.into_inner();
        let mut state = self.state();
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
        Ok(Response::new(OpenSessionResponse {
            session_id: id,
            server_uuid: "double".to_string(),
        }))
    }

    async fn close_session(&self, request: Request<()>) -> Result<Response<()>, Status> {
        self.gate().await?;
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
        Ok(Response::new(()))
    }

    async fn server_info(
        &self,
        _request: Request<ServerInfoRequest>,
    ) -> Result<Response<ServerInfoResponse>, Status> {
        self.gate().await?;
        let state = self.state();
        let visible = state.databases.len() as i32;
        Ok(Response::new(ServerInfoResponse {
            version: self.version.clone(),
            started_at: 0,
            num_transactions: state.databases.values().map(|d| d.tx_count as i64).sum(),
            num_databases: visible,
            databases_disk_size: 0,
        }))
    }

    async fn create_database_v2(
        &self,
        request: Request<CreateDatabaseRequest>,
    ) -> Result<Response<CreateDatabaseResponse>, Status> {
        self.gate().await?;
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
        let update = r
            .settings
            .as_ref()
            .and_then(|s| s.replication_settings.as_ref());
        let replication = Replication::default().merged(update);
        replication.validate(&name)?;
        let settings = Storage::default().merged(r.settings.as_ref(), false, &name)?;
        let db = Database {
            replication,
            loaded: true,
            effective: settings.clone(),
            settings,
            ..Default::default()
        };
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
        self.gate().await?;
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
        let update = r
            .settings
            .as_ref()
            .and_then(|s| s.replication_settings.as_ref());
        let replication = db.replication.merged(update);
        replication.validate(&name)?;
        // Stored now; the running database keeps `effective` until it is loaded again.
        db.settings = db.settings.merged(r.settings.as_ref(), true, &name)?;
        db.replication = replication;
        Ok(Response::new(UpdateDatabaseResponse {
            database: name,
            settings: Some(State::settings_of(db)),
        }))
    }

    async fn database_list_v2(
        &self,
        request: Request<DatabaseListRequestV2>,
    ) -> Result<Response<DatabaseListResponseV2>, Status> {
        self.gate().await?;
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
                num_transactions: db.tx_count,
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
        self.gate().await?;
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
        self.gate().await?;
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
        self.gate().await?;
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
        self.gate().await?;
        let mut state = self.state();
        let (user, db_name) = state.caller(request.metadata())?;
        if state.permission_on(&user, &db_name) < rules::PERMISSION_READ_WRITE {
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
        let r = request.into_inner();
        db.tx_count += 1;
        let tx = db.tx_count;
        for kv in &r.k_vs {
            db.entries.insert(kv.key.clone(), (tx, kv.value.clone()));
        }
        Ok(Response::new(TxHeader {
            id: tx,
            ts: 0,
            nentries: r.k_vs.len() as i32,
        }))
    }

    async fn get(&self, request: Request<KeyRequest>) -> Result<Response<Entry>, Status> {
        self.gate().await?;
        let state = self.state();
        let (_, db) = state.session_database(request.metadata())?;
        let key = request.into_inner().key;
        let (tx, value) = db
            .entries
            .get(&key)
            .cloned()
            .ok_or_else(|| unknown("key not found"))?;
        Ok(Response::new(Entry { tx, key, value }))
    }

    async fn keep_alive(&self, request: Request<()>) -> Result<Response<()>, Status> {
        self.gate().await?;
        self.state().caller(request.metadata())?;
        Ok(Response::new(()))
    }

    async fn get_database_settings_v2(
        &self,
        request: Request<DatabaseSettingsRequest>,
    ) -> Result<Response<DatabaseSettingsResponse>, Status> {
        self.gate().await?;
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
        self.gate().await?;
        let mut state = self.state();
        let database = request.get_ref().database.clone();
        let db = state.database_to_load(request.metadata(), &database)?;
        if !db.loaded {
            return Err(unknown(CLOSED));
        }
        db.loaded = false;
        Ok(Response::new(UnloadDatabaseResponse { database }))
    }

    async fn load_database(
        &self,
        request: Request<LoadDatabaseRequest>,
    ) -> Result<Response<LoadDatabaseResponse>, Status> {
        self.gate().await?;
        let mut state = self.state();
        let database = request.get_ref().database.clone();
        let db = state.database_to_load(request.metadata(), &database)?;
        if db.loaded {
            return Err(unknown("database already loaded"));
        }
        db.loaded = true;
        db.effective = db.settings.clone();
        db.last_loaded = Some(std::time::Instant::now());
        Ok(Response::new(LoadDatabaseResponse { database }))
    }
}

/// The generated `User` message, renamed here so it does not clash with the stored user.
type User_ = crate::proto::User;

//! What one double server keeps in memory: databases, users, sessions and tokens, and the
//! authentication and permission checks every call starts with.

use std::collections::{BTreeMap, HashMap};

use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::commits::Commits;
use crate::ledger::Ledger;
use crate::options::{DbOptions, Replication};
use crate::proto::DatabaseNullableSettings;
use crate::replicator::Replicator;
use crate::rules::{self, unknown, PERMISSION_ADMIN, PERMISSION_SYS_ADMIN};
use crate::storage::Storage;

pub const ADMIN_USER: &str = "immudb";
pub(crate) const DEFAULT_DB: &str = "defaultdb";
pub(crate) const SYSTEM_DB: &str = "systemdb";
pub(crate) const READ_ONLY: &str = "database is read-only because it's a replica";
pub(crate) const CLOSED: &str = "already closed";

#[derive(Clone, Debug, Default)]
pub struct Database {
    pub replication: Replication,
    pub loaded: bool,
    /// Every transaction, chained by its Alh; the key index Get reads.
    pub ledger: Ledger,
    /// Storage settings as stored (what DatabaseListV2 and GetDatabaseSettingsV2 show).
    pub settings: Storage,
    /// The settings the database runs with: those stored when it was last loaded.
    pub effective: Storage,
    /// When LoadDatabase last loaded it, for tests that check the order of reloads.
    pub last_loaded: Option<std::time::Instant>,
    pub replicator: Replicator,
    /// Writers waiting for their sync, replicateTx slots, the syncer.
    pub commits: Commits,
    /// On a synchronous primary: each replica's last precommitted transaction, as its replicator
    /// last reported it (immudb's replica states; acknowledgements count from these).
    pub acks: BTreeMap<String, u64>,
}

impl Database {
    /// An empty, loaded database with immudb's default settings, as a test puts one on a node.
    pub fn loaded() -> Database {
        Database {
            loaded: true,
            ..Default::default()
        }
    }

    pub fn tx_count(&self) -> u64 {
        self.ledger.tx_count()
    }

    /// New replication settings, as immudb applies them: a change of role forgets the replicas'
    /// acknowledgements; with synchronous replication the commit allowance starts at what is
    /// committed (precommitted transactions wait for acknowledgements, or their primary's
    /// permission), without it everything durable commits.
    pub fn set_replication(&mut self, replication: Replication) {
        if replication.replica != self.replication.replica {
            self.acks.clear();
        }
        self.replication = replication;
        self.reset_allowance();
    }

    /// The commit allowance as a database opens with its settings.
    pub fn reset_allowance(&mut self) {
        let allowance = self
            .replication
            .sync_replication
            .then(|| self.ledger.tx_count());
        self.ledger.set_allowance(allowance);
        self.acknowledged();
    }

    /// A synchronous primary commits up to the transaction `syncAcks` replicas hold; writers
    /// waiting for their commit look again.
    pub fn acknowledged(&mut self) {
        let r = &self.replication;
        if r.sync_replication && !r.replica && r.sync_acks > 0 {
            let mut held: Vec<u64> = self.acks.values().copied().collect();
            held.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(&quorum) = held.get(r.sync_acks as usize - 1) {
                self.ledger.allow_commit_up_to(quorum);
            }
        }
        self.commits.notify();
    }
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
    pub(crate) sessions: HashMap<String, (String, String)>,
    /// Sessions opened since the server started, and those closed with CloseSession.
    pub sessions_opened: u64,
    pub sessions_closed: u64,
    pub(crate) tokens: HashMap<String, String>,
    /// Cut off from the network (`Node::isolate`) or stopped for good (the node dropped):
    /// connections to it fail and its replicators pause.
    pub isolated: bool,
    /// The process is stopped for a while (`Node::pause`): connections to it hang.
    pub paused: bool,
    /// Test knob: replicators fetching from this server fail (`connection refused`) while its
    /// clients still reach it, so replicas fall behind an asynchronous primary.
    pub refuse_replication: bool,
    /// Set in systemdb replication mode: the whole server is a read-only replica.
    pub server_replica: bool,
    /// The immudb version ServerInfo reports; a test may change it, as an image change would.
    pub version: String,
    /// Logins (OpenSession, Login, and replicators connecting to this server as their primary):
    /// each costs immudb about 100 ms of CPU (bcrypt).
    pub logins: u64,
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

    /// Forgets every session, as immudb does when it restarts: their calls then answer 7
    /// `session not found`.
    pub fn lose_sessions(&mut self) {
        self.sessions.clear();
    }

    pub(crate) fn check_credentials(
        &self,
        username: &[u8],
        password: &[u8],
    ) -> Result<String, Status> {
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

    pub(crate) fn permission_on(&self, user: &str, db: &str) -> u32 {
        match self.users.get(user) {
            Some(u) if u.sys_admin => PERMISSION_SYS_ADMIN,
            Some(u) => u.permissions.get(db).copied().unwrap_or(0),
            None => 0,
        }
    }

    /// Resolves the caller from `sessionid` or `authorization: Bearer` metadata.
    pub(crate) fn caller(&self, metadata: &MetadataMap) -> Result<(String, String), Status> {
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

    pub(crate) fn require_sys_admin(&self, user: &str) -> Result<(), Status> {
        if self.permission_on(user, SYSTEM_DB) == PERMISSION_SYS_ADMIN {
            Ok(())
        } else {
            Err(unknown(
                "loggedin user does not have permissions for this operation",
            ))
        }
    }

    /// User management on a database: it must exist and the caller must administer it.
    pub(crate) fn administered_database(
        &self,
        caller: &str,
        database: &str,
    ) -> Result<String, Status> {
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

    pub(crate) fn require_writable_server(&self) -> Result<(), Status> {
        if self.server_replica {
            Err(unknown(READ_ONLY))
        } else {
            Ok(())
        }
    }

    pub(crate) fn settings_of(db: &Database) -> DatabaseNullableSettings {
        DbOptions {
            replication: db.replication.clone(),
            storage: db.settings.clone(),
        }
        .to_nullable()
    }

    /// LoadDatabase and UnloadDatabase: the caller administers `database`, which exists and is
    /// not reserved.
    pub(crate) fn database_to_load(
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
    pub(crate) fn session_database(
        &self,
        metadata: &MetadataMap,
    ) -> Result<(String, &Database), Status> {
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

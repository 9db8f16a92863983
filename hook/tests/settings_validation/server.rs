//! One immudb server's stored database options, reached as the hook reaches a real one: requests
//! encoded with the hook's generated types and decoded into the double's, answers the other way.

use std::collections::BTreeMap;

use immudb_double::options::DbOptions;
use immudb_double::proto as double;
use immudb_double::rules::{database_name, unknown};
use immudb_hook::client::convert::{self, SettingsRequest};
use immudb_hook::plan::{Action, Observed, ObservedDatabase};
use prost::Message;
use tonic::Status;

/// `message`, a hook type, as the double's type `T` receives it.
fn over_the_wire<T: Message + Default>(message: &impl Message) -> T {
    T::decode(message.encode_to_vec().as_slice()).expect("the double decodes what the hook sends")
}

/// One immudb server's databases, as it stores them.
#[derive(Clone, Default)]
pub struct Server {
    databases: BTreeMap<String, DbOptions>,
}

impl Server {
    /// CreateDatabaseV2 or UpdateDatabaseV2 as immudb answers them.
    fn try_send(&mut self, request: SettingsRequest) -> Result<(), Status> {
        match request {
            SettingsRequest::Create(create) => {
                let create: double::CreateDatabaseRequest = over_the_wire(&create);
                let name = database_name(&create.name)?;
                if self.databases.contains_key(&name) {
                    // ifNotExists: the existing settings stay, nothing new is applied.
                    return match create.if_not_exists {
                        true => Ok(()),
                        false => Err(unknown("database already exists")),
                    };
                }
                let created = DbOptions::created(&name, create.settings.as_ref())?;
                self.databases.insert(name, created);
            }
            SettingsRequest::Update(update) => {
                let update: double::UpdateDatabaseRequest = over_the_wire(&update);
                let name = database_name(&update.database)?;
                let stored = self
                    .databases
                    .get(&name)
                    .ok_or_else(|| unknown("database does not exist"))?;
                let updated = stored.updated(&name, update.settings.as_ref())?;
                self.databases.insert(name, updated);
            }
        }
        Ok(())
    }

    pub fn send(&mut self, step: &str, request: SettingsRequest) {
        if let Err(status) = self.try_send(request) {
            panic!(
                "{step}: immudb refuses it: {:?} {}",
                status.code(),
                status.message()
            );
        }
    }

    /// Sends every settings change of `actions` (users and reloads change none).
    pub fn apply(&mut self, step: &str, actions: &[Action]) {
        for request in actions.iter().filter_map(convert::settings_request) {
            self.send(step, request);
        }
    }

    /// What the hook reads: DatabaseListV2's answer, over the wire.
    pub fn observed(&self) -> Observed {
        let databases = self
            .databases
            .iter()
            .map(|(name, options)| {
                let info = double::DatabaseInfo {
                    name: name.clone(),
                    settings: Some(options.to_nullable()),
                    loaded: true,
                    ..Default::default()
                };
                convert::observed_database(over_the_wire(&info))
            })
            .collect();
        Observed {
            databases,
            users: vec![],
        }
    }

    pub fn database(&self, name: &str) -> ObservedDatabase {
        self.observed()
            .database(name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} exists"))
    }
}

/// The settings requests among `actions`.
pub fn settings_changes(actions: &[Action]) -> Vec<SettingsRequest> {
    actions
        .iter()
        .filter_map(convert::settings_request)
        .collect()
}

//! The rules one value must obey, and the error that names the flag or spec key, the value and
//! the rule it breaks. Imports only the leaf `types`.

use std::fmt;
use std::path::Path;

use crate::types::Secret;

/// A rejected value (the flag or spec key, the value, and the rule it breaks) or a missing one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid {flag} {value:?}: {rule}")]
    Invalid {
        flag: String,
        value: String,
        rule: String,
    },
    /// A flag clap cannot require because it is global (accepted after the subcommand too).
    #[error("{flag} ({env}) is required")]
    Missing {
        flag: &'static str,
        env: &'static str,
    },
}

pub(crate) fn reject<T>(
    flag: impl Into<String>,
    value: impl fmt::Display,
    rule: impl Into<String>,
) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        flag: flag.into(),
        value: value.to_string(),
        rule: rule.into(),
    })
}

/// immudb's database name rules, plus lower case (immudb folds names, which would make the
/// hook's comparisons miss) and the two reserved names.
pub fn check_database_name(flag: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 128 {
        return reject(flag, name, "database names are 1 to 128 characters long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return reject(
            flag,
            name,
            "database names allow lower-case letters, digits and '_' only (immudb folds upper case)",
        );
    }
    if name == "systemdb" || name == "defaultdb" {
        return reject(flag, name, "systemdb and defaultdb are reserved by immudb");
    }
    Ok(())
}

pub fn check_user_name(flag: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return reject(flag, name, "user names allow letters, digits and '_' only");
    }
    Ok(())
}

/// Reads a password file; a trailing newline (as `echo` writes) is not part of the password.
pub fn read_password(flag: &str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).or_else(|e| {
        reject(
            flag,
            path.display(),
            format!("cannot read the password file: {e}"),
        )
    })?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return reject(flag, path.display(), "the password file is empty");
    }
    Ok(Secret::new(password))
}

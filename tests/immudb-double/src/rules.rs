//! immudb's validation rules, as observed on a running server (`shared/immudb-facts.md`): names
//! and permissions with the exact error texts and status codes, and the two forms a settings
//! error reaches the client in (the settings rules themselves are in `options` and `storage`).

use tonic::{Code, Status};

pub const PERMISSION_READ: u32 = 1;
pub const PERMISSION_READ_WRITE: u32 = 2;
pub const PERMISSION_ADMIN: u32 = 254;
pub const PERMISSION_SYS_ADMIN: u32 = 255;

/// immudb reports application errors as gRPC Unknown with a plain text.
pub fn unknown(text: impl Into<String>) -> Status {
    Status::new(Code::Unknown, text.into())
}

/// A settings error `overwriteWith` raises itself (immudb 1.11.1 pkg/server/db_options.go):
/// InvalidArgument with immudb's prefix once.
pub fn overwrite_error(detail: String) -> Status {
    Status::invalid_argument(format!("illegal arguments: {detail}"))
}

/// A settings error from `(*dbOptions).Validate`, which `overwriteWith` wraps again: the client
/// receives the doubled prefix (observed on immudb 1.10.0 and 1.11.1, `shared/immudb-facts.md`).
pub fn validate_error(detail: String) -> Status {
    overwrite_error(format!(
        "rpc error: code = InvalidArgument desc = illegal arguments: {detail}"
    ))
}

/// Checks a database name and folds it to lower case, as immudb does.
pub fn database_name(name: &str) -> Result<String, Status> {
    if name.is_empty() || name.len() > 128 {
        return Err(unknown("database name length outside of limits"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(unknown(
            "punctuation marks and symbols are not allowed in database name",
        ));
    }
    let folded = name.to_ascii_lowercase();
    if folded == "systemdb" || folded == "defaultdb" {
        return Err(Status::internal("database is reserved"));
    }
    Ok(folded)
}

pub fn username(name: &str) -> Result<(), Status> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Status::invalid_argument(
            "username can only contain letters, digits and underscores",
        ));
    }
    Ok(())
}

/// CreateUser and ChangePermission accept Read, ReadWrite, Admin and (a server quirk) values above 255.
pub fn permission(permission: u32) -> Result<(), Status> {
    match permission {
        PERMISSION_READ | PERMISSION_READ_WRITE | PERMISSION_ADMIN => Ok(()),
        PERMISSION_SYS_ADMIN => Err(unknown("can not create another system admin")),
        p if p > PERMISSION_SYS_ADMIN => Ok(()),
        _ => Err(unknown("unrecognized permission")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_and_reject() {
        assert_eq!(database_name("MyDb").unwrap(), "mydb");
        assert_eq!(
            database_name("DefaultDB").unwrap_err().code(),
            Code::Internal
        );
        assert_eq!(database_name("a-b").unwrap_err().code(), Code::Unknown);
        assert!(database_name(&"x".repeat(129)).is_err());
        assert!(database_name(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn permissions_follow_the_server() {
        for ok in [1, 2, 254, 256] {
            assert!(permission(ok).is_ok(), "{ok}");
        }
        for bad in [0, 3, 253] {
            assert_eq!(
                permission(bad).unwrap_err().message(),
                "unrecognized permission"
            );
        }
        assert_eq!(
            permission(255).unwrap_err().message(),
            "can not create another system admin"
        );
    }
}

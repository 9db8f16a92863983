//! Where backups live: the `--dir` / `--s3-*` flags shared by `backup` and `restore`, validated
//! into a destination before anything is touched. S3 keys come only from files.

use std::path::PathBuf;

use clap::Args;

use crate::config::{check_host, read_password, reject, ConfigError};
use crate::types::Secret;

#[derive(Args, Debug)]
pub struct StorageArgs {
    /// Backup directory (a mounted volume); exclusive with --s3-bucket.
    #[arg(long, env = "IMMUDB_HOOK_BACKUP_DIR")]
    pub dir: Option<PathBuf>,
    /// S3 bucket; exclusive with --dir.
    #[arg(long, env = "IMMUDB_HOOK_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3-compatible endpoint URL (empty: AWS).
    #[arg(long, env = "IMMUDB_HOOK_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "IMMUDB_HOOK_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Address buckets by path (endpoint/bucket) instead of virtual host (bucket.endpoint).
    #[arg(long, env = "IMMUDB_HOOK_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// File holding the S3 access key id (a mounted Secret); without it, the AWS_* variables.
    #[arg(long, env = "IMMUDB_HOOK_S3_ACCESS_KEY_ID_FILE")]
    pub s3_access_key_id_file: Option<PathBuf>,
    /// File holding the S3 secret access key (a mounted Secret).
    #[arg(long, env = "IMMUDB_HOOK_S3_SECRET_ACCESS_KEY_FILE")]
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Path inside the directory or bucket under which backups live.
    #[arg(long, env = "IMMUDB_HOOK_BACKUP_PREFIX", default_value = "")]
    pub prefix: String,
}

#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    /// Access key id and secret from files; `None` leaves credentials to the AWS_* variables.
    pub keys: Option<(Secret, Secret)>,
}

#[derive(Clone, Debug)]
pub enum Destination {
    Dir(PathBuf),
    S3(S3Config),
}

#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub destination: Destination,
    pub prefix: String,
}

/// S3 bucket names: 3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a
/// letter or digit.
fn check_bucket(bucket: &str) -> Result<(), ConfigError> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&bucket.len())
        || !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        || !edge_ok(bucket.chars().next())
        || !edge_ok(bucket.chars().last())
    {
        return reject(
            "--s3-bucket",
            bucket,
            "bucket names are 3 to 63 lower-case letters, digits, '.' and '-'",
        );
    }
    Ok(())
}

/// Object paths: segments of letters, digits, '.', '_' and '-' separated by '/'.
pub(crate) fn check_prefix(prefix: &str) -> Result<String, ConfigError> {
    let trimmed = prefix.trim_matches('/');
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if !trimmed.is_empty() && !trimmed.split('/').all(segment_ok) {
        return reject(
            "--prefix",
            prefix,
            "path segments of letters, digits, '.', '_' and '-' separated by '/'",
        );
    }
    Ok(trimmed.to_string())
}

impl StorageArgs {
    pub fn config(&self) -> Result<StorageConfig, ConfigError> {
        let prefix = check_prefix(&self.prefix)?;
        let destination = match (&self.dir, &self.s3_bucket) {
            (Some(_), Some(bucket)) => {
                return reject(
                    "--s3-bucket",
                    bucket,
                    "give either --dir or --s3-bucket, not both",
                )
            }
            (None, None) => {
                return reject(
                    "--dir",
                    "",
                    "a destination is required: --dir or --s3-bucket",
                )
            }
            (Some(dir), None) => Destination::Dir(dir.clone()),
            (None, Some(bucket)) => Destination::S3(self.s3(bucket)?),
        };
        Ok(StorageConfig {
            destination,
            prefix,
        })
    }

    fn s3(&self, bucket: &str) -> Result<S3Config, ConfigError> {
        check_bucket(bucket)?;
        let endpoint = self
            .s3_endpoint
            .as_ref()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty());
        if let Some(endpoint) = &endpoint {
            let host = endpoint
                .strip_prefix("https://")
                .or_else(|| endpoint.strip_prefix("http://"))
                .map(|rest| rest.split(['/', ':']).next().unwrap_or(""));
            match host {
                Some(host) if check_host("--s3-endpoint", host).is_ok() => {}
                _ => {
                    return reject(
                        "--s3-endpoint",
                        endpoint,
                        "must be an http:// or https:// URL with a host name or IP address",
                    )
                }
            }
        }
        if self.s3_region.trim().is_empty() {
            return reject("--s3-region", "", "must not be empty");
        }
        let keys = match (&self.s3_access_key_id_file, &self.s3_secret_access_key_file) {
            (Some(id), Some(secret)) => Some((
                read_password("--s3-access-key-id-file", id)?,
                read_password("--s3-secret-access-key-file", secret)?,
            )),
            (None, None) => None,
            (Some(id), None) => {
                return reject(
                    "--s3-secret-access-key-file",
                    "",
                    format!("is required with --s3-access-key-id-file {}", id.display()),
                )
            }
            (None, Some(secret)) => {
                return reject(
                    "--s3-access-key-id-file",
                    "",
                    format!(
                        "is required with --s3-secret-access-key-file {}",
                        secret.display()
                    ),
                )
            }
        };
        Ok(S3Config {
            bucket: bucket.to_string(),
            endpoint,
            region: self.s3_region.trim().to_string(),
            path_style: self.s3_path_style,
            keys,
        })
    }
}

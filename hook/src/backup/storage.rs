//! The backup destination: a directory or an S3-compatible bucket, through one crate
//! (`object_store`). Objects appear whole or not at all: a directory object is written to a
//! staging file and renamed, an S3 object is a multipart upload completed at the end; an aborted
//! write leaves nothing. Credentials are never logged: the store's `Display` names only the
//! bucket or directory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};
use tokio::io::AsyncRead;

use super::destination::{Destination, StorageConfig};

/// Part size of a streamed upload (S3's minimum is 5 MiB); memory holds a few parts at most.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight while streaming an upload.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, thiserror::Error)]
#[error("{destination}: {action} {key}: {source}")]
pub struct StorageError {
    pub destination: String,
    pub action: &'static str,
    pub key: String,
    #[source]
    pub source: Box<object_store::Error>,
}

pub struct Storage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// "directory /backups" or "s3://bucket": what errors and logs name.
    pub name: String,
}

impl Storage {
    pub fn open(config: &StorageConfig, timeout: Duration) -> Result<Storage, StorageError> {
        let fail = |name: String, source| StorageError {
            destination: name,
            action: "open",
            key: String::new(),
            source: Box::new(source),
        };
        let (store, name): (Arc<dyn ObjectStore>, String) = match &config.destination {
            Destination::Dir(dir) => {
                let name = format!("directory {}", dir.display());
                let store = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| fail(name.clone(), e))?
                    .with_automatic_cleanup(true);
                (Arc::new(store), name)
            }
            Destination::S3(s3) => {
                // reqwest is built without a TLS provider of its own: the hook's is ring.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let name = format!("s3://{}", s3.bucket);
                let retry = RetryConfig {
                    max_retries: 5,
                    retry_timeout: timeout,
                    ..Default::default()
                };
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_virtual_hosted_style_request(!s3.path_style)
                    .with_retry(retry);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some((id, secret)) = &s3.keys {
                    builder = builder
                        .with_access_key_id(id.expose())
                        .with_secret_access_key(secret.expose());
                }
                let store = builder.build().map_err(|e| fail(name.clone(), e))?;
                (Arc::new(store), name)
            }
        };
        Ok(Storage {
            store,
            prefix: config.prefix.clone(),
            name,
        })
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// A key relative to the prefix, from a listed path.
    fn relative(&self, path: &Path) -> String {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            return full.to_string();
        }
        full.strip_prefix(&format!("{}/", self.prefix))
            .unwrap_or(full)
            .to_string()
    }

    fn error(&self, action: &'static str, key: &str, source: object_store::Error) -> StorageError {
        StorageError {
            destination: self.name.clone(),
            action,
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    /// Every key under `under` (relative to the prefix); a missing bucket or a refused credential
    /// fails here, before anything is written.
    pub async fn list(&self, under: &str) -> Result<Vec<String>, StorageError> {
        let path = self.path(under);
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&path))
            .try_collect()
            .await
            .map_err(|e| self.error("list", under, e))?;
        Ok(listed.iter().map(|m| self.relative(&m.location)).collect())
    }

    pub async fn read_all(&self, key: &str) -> Result<Bytes, StorageError> {
        let got = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| self.error("read", key, e))?;
        got.bytes().await.map_err(|e| self.error("read", key, e))
    }

    /// The object as a byte stream: memory holds what the reader has not consumed yet.
    pub async fn reader(&self, key: &str) -> Result<impl AsyncRead + Unpin + Send, StorageError> {
        let got = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| self.error("read", key, e))?;
        let stream = got.into_stream().map_err(std::io::Error::other);
        Ok(tokio_util::io::StreamReader::new(stream))
    }

    /// A small object in one atomic put (manifests).
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.store
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .map_err(|e| self.error("write", key, e))?;
        Ok(())
    }

    pub async fn writer(&self, key: &str) -> Result<ObjectWriter, StorageError> {
        let upload = self
            .store
            .put_multipart(&self.path(key))
            .await
            .map_err(|e| self.error("write", key, e))?;
        Ok(ObjectWriter {
            upload: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
            key: key.to_string(),
            destination: self.name.clone(),
        })
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.store
            .delete(&self.path(key))
            .await
            .map_err(|e| self.error("delete", key, e))
    }
}

/// A streamed upload: nothing is visible under its key until [`ObjectWriter::finish`].
pub struct ObjectWriter {
    upload: WriteMultipart,
    key: String,
    destination: String,
}

impl ObjectWriter {
    fn error(&self, action: &'static str, source: object_store::Error) -> StorageError {
        StorageError {
            destination: self.destination.clone(),
            action,
            key: self.key.clone(),
            source: Box::new(source),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.upload
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|e| self.error("write", e))?;
        self.upload.write(bytes);
        Ok(())
    }

    pub async fn finish(self) -> Result<(), StorageError> {
        let (key, destination) = (self.key.clone(), self.destination.clone());
        self.upload.finish().await.map_err(|source| StorageError {
            destination,
            action: "complete",
            key,
            source: Box::new(source),
        })?;
        Ok(())
    }

    /// Drops the partial upload; the destination is left as it was.
    pub async fn abort(self) {
        let key = self.key.clone();
        if let Err(error) = self.upload.abort().await {
            tracing::warn!(%error, key, "could not abort the partial upload");
        }
    }
}

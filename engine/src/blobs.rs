//! Large bodies, attachments and archived uploads: a domain trait and its S3 adapter.

use async_trait::async_trait;
use bytes::Bytes;

use crate::aws::{service_error, ErrorKind, ServiceError};

#[derive(Debug, thiserror::Error)]
#[error("blob {key}: {error}")]
pub struct BlobError {
    pub key: String,
    #[source]
    pub error: ServiceError,
}

impl BlobError {
    pub fn new(key: &str, error: ServiceError) -> Self {
        Self {
            key: key.to_string(),
            error,
        }
    }

    /// No object has that key.
    pub fn not_found(&self) -> bool {
        self.error.kind == ErrorKind::NotFound
    }
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), BlobError>;
    async fn get(&self, key: &str) -> Result<Bytes, BlobError>;
    /// Removes an object (rolling back an acceptance); a missing key is no error.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
}

#[derive(Clone, Debug)]
pub struct S3Blobs {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Blobs {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), BlobError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| BlobError::new(key, service_error(e)))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| BlobError::new(key, service_error(e)))?;
        let data = output
            .body
            .collect()
            .await
            .map_err(|e| BlobError::new(key, ServiceError::new(ErrorKind::Unavailable, e.to_string())))?;
        Ok(data.into_bytes())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| BlobError::new(key, service_error(e)))?;
        Ok(())
    }
}

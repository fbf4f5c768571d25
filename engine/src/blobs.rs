//! Large bodies, attachments and archived uploads: a domain trait and its S3 adapter.

use async_trait::async_trait;
use bytes::Bytes;

use crate::aws::describe;

#[derive(Debug, thiserror::Error)]
#[error("blob {key}: {reason}")]
pub struct BlobError {
    pub key: String,
    pub reason: String,
    /// No object has that key.
    pub not_found: bool,
}

fn failed(key: &str, error: &(dyn std::error::Error + 'static)) -> BlobError {
    BlobError {
        key: key.to_string(),
        reason: describe(error),
        not_found: false,
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
            .map_err(|e| failed(key, &e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        let fail = |reason: String, not_found: bool| BlobError {
            key: key.to_string(),
            reason,
            not_found,
        };
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                let missing = e.as_service_error().is_some_and(|e| e.is_no_such_key());
                fail(describe(&e), missing)
            })?;
        let data = output.body.collect().await.map_err(|e| fail(e.to_string(), false))?;
        Ok(data.into_bytes())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed(key, &e))?;
        Ok(())
    }
}

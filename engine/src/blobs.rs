//! Large bodies, attachments and archived uploads: a domain trait and its S3 adapter.
//!
//! Small objects are put and got whole. An uploaded campaign can be
//! gigabytes, so it is written as it arrives ([`BlobStore::writer`]: an S3
//! multipart upload, one part per [`PART_BYTES`]) and read back as a stream
//! ([`BlobStore::read`]); neither holds more than a part in memory.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::Stream;

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

/// An object's bytes, chunk by chunk.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, BlobError>> + Send>>;

#[async_trait]
pub trait BlobStore: Send + Sync {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), BlobError>;
    async fn get(&self, key: &str) -> Result<Bytes, BlobError>;
    /// Reads an object as a stream of chunks.
    async fn read(&self, key: &str) -> Result<BlobStream, BlobError>;
    /// Starts writing an object piece by piece; it exists once `finish`ed.
    async fn writer(&self, key: &str, content_type: &str) -> Result<Box<dyn BlobWriter>, BlobError>;
    /// Removes an object (rolling back an acceptance); a missing key is no error.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
}

/// An object being written. Dropped without `finish`, it never appears.
/// `abort` removes an S3 multipart upload left open; one left by a process
/// that died keeps its parts until removed (on AWS, a bucket lifecycle rule
/// `AbortIncompleteMultipartUpload` does that; provisioning sets none yet).
#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, bytes: Bytes) -> Result<(), BlobError>;
    /// Makes the object whole and durable; returns its size in bytes.
    async fn finish(self: Box<Self>) -> Result<u64, BlobError>;
    async fn abort(self: Box<Self>);
}

/// The size of one multipart part (S3 takes 5 MiB to 5 GiB; at most 10,000
/// parts, so an object of up to 80 GiB).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

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

    async fn get_object(
        &self,
        key: &str,
        range: Option<String>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, BlobError> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range)
            .send()
            .await
            .map_err(|e| BlobError::new(key, service_error(e)))
    }

    /// Up to [`PART_BYTES`] from `start`, and the object's whole size.
    async fn get_range(&self, key: &str, start: u64) -> Result<(Bytes, u64), BlobError> {
        let end = start + PART_BYTES as u64 - 1;
        let output = self.get_object(key, Some(format!("bytes={start}-{end}"))).await?;
        // `bytes 0-8388607/91877091`: the size follows the slash.
        let size = output
            .content_range
            .as_deref()
            .and_then(|range| range.rsplit('/').next()?.parse().ok());
        let bytes = collect(key, output.body).await?;
        let size = size.unwrap_or(start + bytes.len() as u64);
        Ok((bytes, size))
    }
}

async fn collect(key: &str, body: aws_sdk_s3::primitives::ByteStream) -> Result<Bytes, BlobError> {
    let data = body
        .collect()
        .await
        .map_err(|e| BlobError::new(key, ServiceError::new(ErrorKind::Unavailable, e.to_string())))?;
    Ok(data.into_bytes())
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
        let output = self.get_object(key, None).await?;
        collect(key, output.body).await
    }

    /// One ranged `GetObject` per [`PART_BYTES`], each read whole. A single
    /// long GET is not used: its consumer writes each chunk to the stack
    /// before reading on, and the SDK's stalled-stream protection cut such a
    /// read ("streaming error") seven times in the million-row benchmark.
    async fn read(&self, key: &str) -> Result<BlobStream, BlobError> {
        let blobs = self.clone();
        let key = key.to_string();
        let ranges = futures::stream::try_unfold(Some(0u64), move |start| {
            let (blobs, key) = (blobs.clone(), key.clone());
            async move {
                let Some(start) = start else { return Ok(None) };
                let (bytes, size) = blobs.get_range(&key, start).await?;
                let next = start + bytes.len() as u64;
                Ok(Some((bytes, (next < size && next > start).then_some(next))))
            }
        });
        Ok(Box::pin(ranges))
    }

    async fn writer(&self, key: &str, content_type: &str) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(Box::new(S3Writer {
            blobs: self.clone(),
            key: key.to_string(),
            content_type: content_type.to_string(),
            buffer: BytesMut::new(),
            upload_id: None,
            parts: Vec::new(),
            size: 0,
        }))
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

/// A multipart upload begun at the first full part; an object smaller than
/// one part is put whole at `finish`.
struct S3Writer {
    blobs: S3Blobs,
    key: String,
    content_type: String,
    buffer: BytesMut,
    upload_id: Option<String>,
    parts: Vec<aws_sdk_s3::types::CompletedPart>,
    size: u64,
}

impl S3Writer {
    fn error(&self, error: ServiceError) -> BlobError {
        BlobError::new(&self.key, error)
    }

    async fn upload_id(&mut self) -> Result<String, BlobError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let created = self
            .blobs
            .client
            .create_multipart_upload()
            .bucket(&self.blobs.bucket)
            .key(&self.key)
            .content_type(&self.content_type)
            .send()
            .await
            .map_err(|e| self.error(service_error(e)))?;
        let id = created
            .upload_id
            .ok_or_else(|| self.error(ServiceError::new(ErrorKind::Invalid, "S3 gave no upload id")))?;
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    /// Uploads the buffer as the next part.
    async fn flush_part(&mut self) -> Result<(), BlobError> {
        let upload_id = self.upload_id().await?;
        let number = i32::try_from(self.parts.len() + 1).expect("at most 10,000 parts");
        let body = self.buffer.split().freeze();
        let uploaded = self
            .blobs
            .client
            .upload_part()
            .bucket(&self.blobs.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(number)
            .body(body.into())
            .send()
            .await
            .map_err(|e| self.error(service_error(e)))?;
        let part = aws_sdk_s3::types::CompletedPart::builder()
            .part_number(number)
            .set_e_tag(uploaded.e_tag)
            .build();
        self.parts.push(part);
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, bytes: Bytes) -> Result<(), BlobError> {
        self.size += bytes.len() as u64;
        self.buffer.extend_from_slice(&bytes);
        if self.buffer.len() >= PART_BYTES {
            self.flush_part().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, BlobError> {
        if self.upload_id.is_none() {
            let bytes = self.buffer.split().freeze();
            self.blobs.put(&self.key, bytes, &self.content_type).await?;
            return Ok(self.size);
        }
        if !self.buffer.is_empty() {
            self.flush_part().await?;
        }
        let upload = aws_sdk_s3::types::CompletedMultipartUpload::builder()
            .set_parts(Some(std::mem::take(&mut self.parts)))
            .build();
        self.blobs
            .client
            .complete_multipart_upload()
            .bucket(&self.blobs.bucket)
            .key(&self.key)
            .upload_id(self.upload_id.clone().unwrap_or_default())
            .multipart_upload(upload)
            .send()
            .await
            .map_err(|e| self.error(service_error(e)))?;
        Ok(self.size)
    }

    async fn abort(self: Box<Self>) {
        let Some(upload_id) = &self.upload_id else { return };
        let aborted = self
            .blobs
            .client
            .abort_multipart_upload()
            .bucket(&self.blobs.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(error) = aborted {
            tracing::warn!(key = %self.key, error = %crate::aws::describe(&error), "could not abort a multipart upload");
        }
    }
}

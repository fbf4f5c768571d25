//! Accepting a campaign, in two halves.
//!
//! **At upload** ([`Intake`]): the CSV streams to the blob store as it arrives
//! (a multipart upload for a large file) and is checked row by row on the
//! way; attachments stream beside it. When the last byte is in, rows naming
//! a file that is not in the upload are rejected, attachments no row names
//! are deleted, the batch's report (every rejected and duplicate row, counts)
//! is stored, and its progress is saved RECEIVED: the upload is answered 202
//! with the batch id. Memory holds one part of the file, the verdicts and
//! the recipients seen (for exact duplicate detection), never the rows.
//!
//! **After** ([`run_batches`], [`Pipeline::process_batch`]): the stored file
//! is read again as a stream, and its accepted rows become messages in
//! chunks of [`CHUNK_ROWS`], [`CHUNKS_IN_FLIGHT`] at once: recorded PENDING,
//! enqueued, recorded QUEUED, then the checkpoint saved past each in file
//! order. Each row's send id is derived from the batch and row, so the chunks
//! in doubt after a crash (those past the checkpoint) are written again with
//! conditions, and a second queued copy is harmless (the sender's claim
//! holds for one copy). Once every row is enqueued the batch waits until
//! none of its messages is PENDING or QUEUED: DONE.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::aws::{ErrorKind, ServiceError};
use crate::batches::{BatchPhase, BatchProgress, BatchStoreError};
use crate::blobs::{BlobError, BlobStream, BlobWriter};
use crate::csv_upload::{
    AcceptedRow, CsvFileError, CsvLimits, CsvUploadParser, DuplicateRow, ParsedUpload, RejectedRow,
};
use crate::domain::content::quoted;
use crate::domain::{Attachment, BatchId, MessageKind, Priority, QueueRef, SendId};
use crate::pipeline::{IngestError, NewMessage, Pipeline, Recording};

/// What became of every row of a batch, fixed when the upload ends. Kept
/// whole in the blob store (so GraphQL can page through it); answered to
/// the uploader cut to its first rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    pub batch_id: BatchId,
    pub file_name: String,
    /// Data rows in the file.
    pub rows: u64,
    pub accepted: u64,
    pub duplicates: usize,
    pub rejected: usize,
    /// Where the CSV is stored.
    pub archive_key: String,
    /// The uploaded files rows name, as stored.
    pub attachments: Vec<Attachment>,
    /// Attachment parts no row named: not kept.
    pub unused_attachments: Vec<String>,
    pub rejected_rows: Vec<RejectedRow>,
    pub duplicate_rows: Vec<DuplicateRow>,
    pub created_at: DateTime<Utc>,
}

impl BatchReport {
    /// The report with at most `rows` rejected and duplicate rows (the counts
    /// stay whole), and whether rows were left out.
    pub fn first_rows(mut self, rows: usize) -> (Self, bool) {
        let truncated = self.rejected_rows.len() > rows || self.duplicate_rows.len() > rows;
        self.rejected_rows.truncate(rows);
        self.duplicate_rows.truncate(rows);
        (self, truncated)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The file as a whole cannot be used: nothing is stored.
    #[error("{file_name}: {error}")]
    File {
        file_name: String,
        #[source]
        error: CsvFileError,
    },
    /// Not one row can be sent: the batch is refused and nothing is stored.
    #[error("{file_name}: no row can be sent ({rejected} rejected, {duplicates} duplicates){first}")]
    NothingAccepted {
        file_name: String,
        rejected: usize,
        duplicates: usize,
        /// The first rejection, as `; row N, field F: reason`, when there is one.
        first: String,
    },
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

impl From<BlobError> for CampaignError {
    fn from(error: BlobError) -> Self {
        CampaignError::Ingest(error.into())
    }
}

impl From<BatchStoreError> for CampaignError {
    fn from(error: BatchStoreError) -> Self {
        CampaignError::Ingest(error.into())
    }
}

/// Where a batch's objects live in the blob store.
fn archive_key(batch: BatchId, file_name: &str) -> String {
    format!("uploads/{batch}/{}", sanitize_key(file_name))
}

/// One key per part: its position makes it unique whatever its name, and
/// the sanitized name keeps the key readable.
fn attachment_key(batch: BatchId, part: usize, name: &str) -> String {
    format!("attachments/{batch}/{part}/{}", sanitize_key(name))
}

fn report_key(batch: BatchId) -> String {
    format!("batches/{batch}/report.json")
}

/// A campaign upload while its bytes arrive. Feed it the CSV and the
/// attachments as they stream, then [`Intake::finish`] it; on any error,
/// [`Intake::abandon`] removes what it stored.
pub struct Intake {
    pipeline: Pipeline,
    batch_id: BatchId,
    parser: CsvUploadParser,
    /// The CSV's file name and where it is being written.
    csv: Option<(String, Box<dyn BlobWriter>)>,
    accepted: u64,
    /// Accepted rows naming each attachment, until the upload shows which
    /// files it holds.
    named: HashMap<String, Vec<u64>>,
    /// Attachments stored so far, in upload order.
    parts: Vec<Attachment>,
    /// The attachment being written.
    part: Option<Box<dyn BlobWriter>>,
    /// The archive and report, once written: removed if the batch is not saved.
    written: Vec<String>,
}

impl Intake {
    pub fn new(pipeline: Pipeline) -> Self {
        Self {
            pipeline,
            batch_id: BatchId::new(),
            parser: CsvUploadParser::new(CsvLimits::default()),
            csv: None,
            accepted: 0,
            named: HashMap::new(),
            parts: Vec::new(),
            part: None,
            written: Vec::new(),
        }
    }

    /// The CSV part begins.
    pub async fn begin_csv(&mut self, file_name: &str) -> Result<(), CampaignError> {
        let key = archive_key(self.batch_id, file_name);
        let writer = self.pipeline.blobs.writer(&key, "text/csv").await?;
        self.csv = Some((file_name.to_string(), writer));
        Ok(())
    }

    /// The next bytes of the CSV: checked, then stored.
    pub async fn csv_chunk(&mut self, chunk: Bytes) -> Result<(), CampaignError> {
        let (file_name, writer) = self.csv.as_mut().expect("begin_csv comes first");
        self.parser.feed(&chunk).map_err(|error| CampaignError::File {
            file_name: file_name.clone(),
            error,
        })?;
        writer.write(chunk).await?;
        let rows = self.parser.take_accepted();
        self.note_accepted(rows);
        Ok(())
    }

    /// Counts accepted rows and forgets them (they are read again from the
    /// stored file), keeping only which files they name.
    fn note_accepted(&mut self, rows: Vec<AcceptedRow>) {
        for row in rows {
            self.accepted += 1;
            if let Some(name) = row.attachment {
                self.named.entry(name).or_default().push(row.row);
            }
        }
    }

    /// An attachment part begins.
    pub async fn begin_attachment(&mut self, name: &str, content_type: &str) -> Result<(), CampaignError> {
        let key = attachment_key(self.batch_id, self.parts.len(), name);
        self.part = Some(self.pipeline.blobs.writer(&key, content_type).await?);
        self.parts.push(Attachment {
            key,
            filename: name.to_string(),
            content_type: content_type.to_string(),
        });
        Ok(())
    }

    pub async fn attachment_chunk(&mut self, chunk: Bytes) -> Result<(), CampaignError> {
        let part = self.part.as_mut().expect("begin_attachment comes first");
        part.write(chunk).await?;
        Ok(())
    }

    pub async fn end_attachment(&mut self) -> Result<(), CampaignError> {
        if let Some(part) = self.part.take() {
            part.finish().await?;
        }
        Ok(())
    }

    /// The upload is in: the verdicts are final, the file durable, the
    /// report stored and the batch RECEIVED. On an error nothing stays behind.
    pub async fn finish(mut self) -> Result<(BatchReport, BatchProgress), CampaignError> {
        match self.complete().await {
            Ok(done) => Ok(done),
            Err(error) => {
                self.abandon().await;
                Err(error)
            }
        }
    }

    async fn complete(&mut self) -> Result<(BatchReport, BatchProgress), CampaignError> {
        let (file_name, writer) = self.csv.take().expect("the API checks there is a CSV part");
        let parser = std::mem::replace(&mut self.parser, CsvUploadParser::new(CsvLimits::default()));
        let parsed = match parser.finish() {
            Ok(parsed) => parsed,
            Err(error) => {
                writer.abort().await;
                return Err(CampaignError::File { file_name, error });
            }
        };
        let ParsedUpload {
            accepted,
            duplicates,
            mut rejected,
        } = parsed;
        self.note_accepted(accepted);
        rejected.extend(self.rows_naming_missing_files());
        rejected.sort_by_key(|r| r.row);
        if self.accepted == 0 {
            writer.abort().await;
            let first = rejected.first().map(|r| format!("; {r}"));
            return Err(CampaignError::NothingAccepted {
                file_name,
                rejected: rejected.len(),
                duplicates: duplicates.len(),
                first: first.unwrap_or_default(),
            });
        }
        let archive = archive_key(self.batch_id, &file_name);
        let size = writer.finish().await?;
        self.written.push(archive.clone());
        let unused = self.drop_unused_attachments().await;
        let report = BatchReport {
            batch_id: self.batch_id,
            file_name,
            rows: self.accepted + (rejected.len() + duplicates.len()) as u64,
            accepted: self.accepted,
            duplicates: duplicates.len(),
            rejected: rejected.len(),
            archive_key: archive,
            attachments: self.parts.clone(),
            unused_attachments: unused,
            rejected_rows: rejected,
            duplicate_rows: duplicates,
            created_at: crate::clock::now(),
        };
        self.written.push(report_key(self.batch_id));
        self.pipeline.put_report(&report).await?;
        let progress = BatchProgress::received(&report);
        self.pipeline.batches.save(&progress).await?;
        let metrics = &self.pipeline.metrics;
        metrics.record_upload(0, report.rejected, report.duplicates);
        tracing::info!(batch_id = %report.batch_id, bytes = size, rows = report.rows, "campaign stored");
        Ok((report, progress))
    }

    /// Accepted rows naming a file the upload does not hold: rejected, and
    /// no longer counted as accepted.
    fn rows_naming_missing_files(&mut self) -> Vec<RejectedRow> {
        let uploaded: HashSet<&str> = self.parts.iter().map(|p| p.filename.as_str()).collect();
        let mut missing = Vec::new();
        for (name, rows) in &self.named {
            if uploaded.contains(name.as_str()) {
                continue;
            }
            for row in rows {
                missing.push(RejectedRow {
                    row: *row,
                    field: Some("attachment".into()),
                    reason: format!("names `{}`, which is not a file in this upload", quoted(name)),
                });
            }
        }
        self.accepted -= missing.len() as u64;
        missing
    }

    /// Deletes the attachments no accepted row names; returns their names.
    async fn drop_unused_attachments(&mut self) -> Vec<String> {
        let (used, unused): (Vec<Attachment>, Vec<Attachment>) = std::mem::take(&mut self.parts)
            .into_iter()
            .partition(|part| self.named.contains_key(&part.filename));
        for part in &unused {
            self.pipeline.delete_blob(&part.key).await;
        }
        self.parts = used;
        unused.into_iter().map(|part| part.filename).collect()
    }

    /// Removes everything this upload stored.
    pub async fn abandon(mut self) {
        if let Some((_, writer)) = self.csv.take() {
            writer.abort().await;
        }
        if let Some(part) = self.part.take() {
            part.abort().await;
        }
        let stored = self.parts.iter().map(|part| &part.key).chain(&self.written);
        for key in stored {
            self.pipeline.delete_blob(key).await;
        }
    }
}

impl BatchProgress {
    /// A batch just stored: no row recorded yet.
    pub fn received(report: &BatchReport) -> Self {
        BatchProgress {
            batch_id: report.batch_id,
            file_name: report.file_name.clone(),
            archive_key: report.archive_key.clone(),
            phase: BatchPhase::Received,
            reason: None,
            rows: report.rows,
            accepted: report.accepted,
            checkpoint_row: 1,
            enqueued: 0,
            failed_to_enqueue: 0,
            received_at: report.created_at,
            enqueued_at: None,
            finished_at: None,
            resumed: 0,
        }
    }
}

/// Rows recorded and enqueued between two checkpoints.
pub const CHUNK_ROWS: usize = 500;
/// Rows of a chunk written at once while reminders flow: one `BatchWriteItem`
/// of 25, three `SendMessageBatch`, one transaction.
pub const PART_ROWS: usize = 25;
/// Chunks being written at once.
pub const CHUNKS_IN_FLIGHT: usize = 4;
/// How often a batch held back by a full queue looks again: at most
/// [`CHUNKS_IN_FLIGHT`] `GetQueueAttributes` this often, and at even 1,000
/// sends a second the queue is far from empty by the next look.
const ROOM_POLL: Duration = Duration::from_secs(5);
/// How often a batch whose rows are all enqueued looks whether it is DONE.
const DONE_POLL: Duration = Duration::from_secs(2);
/// The longest wait between two tries of a chunk the stack refused.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Counts a batch in progress for as long as its task lives, however it
/// ends (a crash drops the task mid-way).
struct InProgress(std::sync::Arc<crate::metrics::Metrics>);

impl InProgress {
    fn count(metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        metrics.batch_in_progress(1);
        Self(metrics)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.batch_in_progress(-1);
    }
}

/// Why reading a stored batch stopped short.
enum Interrupted {
    /// Shutting down: the checkpoint is saved, the next start resumes.
    Stopping,
    /// A failure that may pass (the store did not answer): try again.
    Transient(String),
    /// The batch cannot go on.
    Failed(String),
}

/// Runs batches in the background until `stop`: first every batch an
/// earlier run left unfinished, then each new one the API sends. Dropping
/// this future (a crash) drops every batch's task mid-chunk; the next start
/// resumes them from their checkpoints.
pub async fn run_batches(pipeline: Pipeline, mut new: mpsc::UnboundedReceiver<BatchProgress>, stop: CancellationToken) {
    let mut running = JoinSet::new();
    match pipeline.batches.unfinished().await {
        Ok(unfinished) => {
            for progress in unfinished {
                tracing::info!(batch_id = %progress.batch_id, phase = ?progress.phase, checkpoint_row = progress.checkpoint_row, "resuming an unfinished batch");
                running.spawn(pipeline.clone().process_batch(progress, stop.clone()));
            }
        }
        Err(error) => tracing::error!(%error, "could not list unfinished batches; they resume at the next start"),
    }
    loop {
        tokio::select! {
            Some(progress) = new.recv() => {
                running.spawn(pipeline.clone().process_batch(progress, stop.clone()));
            }
            Some(ended) = running.join_next(), if !running.is_empty() => {
                if let Err(error) = ended {
                    tracing::error!(%error, "a batch's task failed");
                }
            }
            () = stop.cancelled() => break,
        }
    }
    while running.join_next().await.is_some() {}
}

impl Pipeline {
    /// Takes a batch from wherever it is to DONE (or FAILED), saving its
    /// progress as it goes; returns early, checkpoint saved, on `stop`.
    pub async fn process_batch(self, mut progress: BatchProgress, stop: CancellationToken) {
        let batch_id = progress.batch_id;
        let _counted = InProgress::count(self.metrics.clone());
        let mut in_doubt = progress.phase == BatchPhase::Parsing;
        if in_doubt {
            progress.resumed += 1;
        }
        let mut delay = Duration::from_millis(200);
        while matches!(progress.phase, BatchPhase::Received | BatchPhase::Parsing) {
            progress.phase = BatchPhase::Parsing;
            self.save_progress(&progress, &stop).await;
            match self.enqueue_rows(&mut progress, in_doubt, &stop).await {
                Ok(()) => {
                    progress.phase = BatchPhase::Enqueued;
                    progress.enqueued_at = Some(crate::clock::now());
                }
                Err(Interrupted::Stopping) => break,
                Err(Interrupted::Transient(reason)) => {
                    tracing::warn!(%batch_id, %reason, "batch interrupted; trying again from its checkpoint");
                    in_doubt = true;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(Interrupted::Failed(reason)) => {
                    tracing::error!(%batch_id, %reason, "batch failed");
                    progress.phase = BatchPhase::Failed;
                    progress.reason = Some(reason);
                    progress.finished_at = Some(crate::clock::now());
                }
            }
        }
        if progress.phase == BatchPhase::Enqueued {
            self.save_progress(&progress, &stop).await;
            tracing::info!(%batch_id, enqueued = progress.enqueued, "every row of the batch is enqueued");
            self.await_done(&mut progress, &stop).await;
        }
        self.save_progress(&progress, &stop).await;
    }

    /// Reads the stored file again and records and enqueues every accepted
    /// row past the checkpoint: one side parses chunks off the stream, the
    /// other writes up to [`CHUNKS_IN_FLIGHT`] of them at once and moves the
    /// checkpoint past each in file order.
    async fn enqueue_rows(
        &self,
        progress: &mut BatchProgress,
        in_doubt: bool,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let attachments = self.stored_attachments(progress.batch_id).await?;
        let stream = match self.blobs.read(&progress.archive_key).await {
            Ok(stream) => stream,
            Err(error) if error.not_found() => {
                return Err(Interrupted::Failed(format!("the stored file is gone: {error}")))
            }
            Err(error) => return Err(Interrupted::Transient(error.to_string())),
        };
        let (chunks, received) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let rows = RowsAfter {
            batch: progress.batch_id,
            checkpoint_row: progress.checkpoint_row,
            attachments,
        };
        let (read, written) = tokio::join!(
            read_chunks(stream, rows, chunks, stop),
            self.write_chunks(progress, received, in_doubt, stop)
        );
        written?;
        read
    }

    /// The attachments rows may name, from the batch's report.
    async fn stored_attachments(&self, batch: BatchId) -> Result<HashMap<String, Attachment>, Interrupted> {
        match self.batch_report(batch).await {
            Ok(Some(report)) => Ok(report
                .attachments
                .into_iter()
                .map(|a| (a.filename.clone(), a))
                .collect()),
            Ok(None) => Err(Interrupted::Failed(
                "the batch's report is gone from the blob store".into(),
            )),
            Err(error) => Err(Interrupted::Transient(error.to_string())),
        }
    }

    /// Writes the chunks as they come, several at once, saving the
    /// checkpoint past each in order; after a crash, the first
    /// [`CHUNKS_IN_FLIGHT`] chunks past the checkpoint are in doubt.
    async fn write_chunks(
        &self,
        progress: &mut BatchProgress,
        received: mpsc::Receiver<Chunk>,
        in_doubt: bool,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let batch = progress.batch_id;
        let chunks = futures::stream::unfold(received, |mut chunks| async move {
            chunks.recv().await.map(|chunk| (chunk, chunks))
        });
        let written = chunks
            .enumerate()
            .map(|(index, chunk)| async move {
                let recording = match in_doubt && index < CHUNKS_IN_FLIGHT {
                    true => Recording::MayExist,
                    false => Recording::New,
                };
                match self.wait_for_room(batch, &chunk, stop).await {
                    true => Some(self.write_chunk(batch, chunk, recording).await),
                    false => None,
                }
            })
            .buffered(CHUNKS_IN_FLIGHT);
        let mut written = std::pin::pin!(written);
        // A chunk not written (stopping while it waited) ends the batch's
        // turn here; the checkpoint stays before it.
        while let Some(Some(chunk)) = written.next().await {
            progress.enqueued += chunk.enqueued;
            progress.failed_to_enqueue += chunk.failed;
            progress.checkpoint_row = chunk.last_row;
            self.metrics.record_ingested(chunk.rows);
            // No chunk starts until this is saved: at most CHUNKS_IN_FLIGHT
            // chunks past a saved checkpoint are ever being written.
            self.save_progress(progress, stop).await;
        }
        match stop.is_cancelled() {
            true => Err(Interrupted::Stopping),
            false => Ok(()),
        }
    }

    /// Waits until every queue `chunk` goes to holds fewer messages waiting
    /// than `queues.campaign_max_waiting`: the senders set the pace of a
    /// campaign larger than that. False when `stop` came first. A depth that
    /// cannot be read does not hold the batch back.
    async fn wait_for_room(&self, batch: BatchId, chunk: &Chunk, stop: &CancellationToken) -> bool {
        let limit = self.settings.queues.campaign_max_waiting;
        let priorities: std::collections::BTreeSet<Priority> = chunk
            .iter()
            .map(|(_, m)| self.settings.routing.route(m.kind, m.priority))
            .collect();
        let mut logged = false;
        while let Some((priority, waiting)) = self.full_queue(&priorities, limit).await {
            // Once per chunk that waits: a 10M-row campaign holds back 20,000
            // of them, so not at info.
            if !logged {
                tracing::debug!(%batch, %priority, waiting, limit, "the queue is full: the chunk waits for the senders");
                logged = true;
            }
            tokio::select! {
                () = tokio::time::sleep(ROOM_POLL) => {}
                () = stop.cancelled() => return false,
            }
        }
        true
    }

    /// The first of `priorities` whose queue holds `limit` messages waiting
    /// or more, with how many.
    async fn full_queue(
        &self,
        priorities: &std::collections::BTreeSet<Priority>,
        limit: u64,
    ) -> Option<(Priority, u64)> {
        for &priority in priorities {
            match self.queues.depth(QueueRef::Main(priority)).await {
                Ok(depth) if depth.visible >= limit => return Some((priority, depth.visible)),
                Ok(_) => {}
                Err(error) => tracing::warn!(%priority, %error, "could not read the queue's depth; enqueueing anyway"),
            }
        }
        None
    }

    /// Records and enqueues one chunk, retrying until the stack takes it.
    /// While reminders flow it goes [`PART_ROWS`] rows at a time, each part
    /// making way for reminders on their way first
    /// ([`crate::pipeline::HighActivity::make_way`]): a chunk's 500 rows are
    /// some 70 calls, and a reminder's own would queue behind them.
    async fn write_chunk(&self, batch: BatchId, chunk: Chunk, recording: Recording) -> Written {
        let last_row = chunk.last().map_or(0, |(row, _)| *row);
        let mut messages: Vec<NewMessage> = chunk.into_iter().map(|(_, message)| message).collect();
        let rows = messages.len();
        let _turn = self.high.background_turn().await;
        let (mut enqueued, mut failed) = (0, 0);
        while !messages.is_empty() {
            let take = match self.high.active() {
                true => PART_ROWS.min(messages.len()),
                false => messages.len(),
            };
            let part: Vec<NewMessage> = messages.drain(..take).collect();
            self.high.make_way().await;
            let (part_enqueued, part_failed) = self.write_part(batch, part, recording).await;
            enqueued += part_enqueued;
            failed += part_failed;
        }
        Written {
            last_row,
            rows,
            enqueued: enqueued as u64,
            failed: failed as u64,
        }
    }

    /// Records and enqueues rows of a chunk, retrying until the stack takes
    /// them; how many were enqueued, and how many failed.
    async fn write_part(&self, batch: BatchId, messages: Vec<NewMessage>, mut recording: Recording) -> (usize, usize) {
        let rows = messages.len();
        let mut delay = Duration::from_millis(200);
        let accepted = loop {
            match self.accept_chunk(batch, messages.clone(), recording).await {
                Ok(accepted) => break accepted,
                Err(error) => {
                    tracing::warn!(%batch, %error, "a chunk was refused; trying it again");
                    recording = Recording::MayExist;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        };
        let failed = accepted.failed.len();
        // Rows of a chunk written before may have been on their queues already.
        let enqueued = match recording {
            Recording::New => accepted.enqueued,
            Recording::MayExist => rows - failed,
        };
        (enqueued, failed)
    }

    /// Saves progress, retrying until it is saved (or the engine stops).
    async fn save_progress(&self, progress: &BatchProgress, stop: &CancellationToken) {
        let mut delay = Duration::from_millis(200);
        while let Err(error) = self.batches.save(progress).await {
            tracing::warn!(batch_id = %progress.batch_id, %error, "could not save the batch's progress; trying again");
            if stop.is_cancelled() {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    /// Waits until none of the batch's messages is PENDING or QUEUED.
    async fn await_done(&self, progress: &mut BatchProgress, stop: &CancellationToken) {
        // Records older than the oldest unfinished one are final: each look starts there.
        let mut from = None;
        loop {
            match self.store.unfinished_since(progress.batch_id, from).await {
                Ok(None) => {
                    progress.phase = BatchPhase::Done;
                    progress.finished_at = Some(crate::clock::now());
                    tracing::info!(batch_id = %progress.batch_id, "batch done: every message is SENT or ERROR");
                    return;
                }
                Ok(Some(oldest)) => from = Some(oldest),
                Err(error) => {
                    tracing::warn!(batch_id = %progress.batch_id, %error, "could not look whether the batch is done")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(DONE_POLL) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    pub(crate) async fn put_report(&self, report: &BatchReport) -> Result<(), BlobError> {
        let json = serde_json::to_vec(report).expect("a report serializes");
        self.blobs
            .put(&report_key(report.batch_id), Bytes::from(json), "application/json")
            .await
    }

    /// The stored report of a batch, or `None` when no such batch was accepted.
    pub async fn batch_report(&self, batch: BatchId) -> Result<Option<BatchReport>, BlobError> {
        let key = report_key(batch);
        match self.blobs.get(&key).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                let text = format!("the stored batch report is unreadable: {e}");
                BlobError::new(&key, ServiceError::new(ErrorKind::Invalid, text))
            }),
            Err(error) if error.not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// A batch's progress, or `None` when no such batch was accepted.
    pub async fn batch_progress(&self, batch: BatchId) -> Result<Option<BatchProgress>, BatchStoreError> {
        self.batches.get(batch).await
    }
}

/// A chunk of rows: (spreadsheet row, message), in file order.
type Chunk = Vec<(u64, NewMessage)>;

/// What writing one chunk did.
struct Written {
    last_row: u64,
    rows: usize,
    enqueued: u64,
    failed: u64,
}

/// Which rows of a batch are still to write, and the files they may name.
struct RowsAfter {
    batch: BatchId,
    checkpoint_row: u64,
    attachments: HashMap<String, Attachment>,
}

impl RowsAfter {
    /// The message an accepted row becomes, or `None` for a row up to the
    /// checkpoint or one naming a file the upload did not hold (rejected then).
    fn message(&self, row: AcceptedRow) -> Option<(u64, NewMessage)> {
        if row.row <= self.checkpoint_row {
            return None;
        }
        let attachment = match &row.attachment {
            None => None,
            Some(name) => Some(self.attachments.get(name)?.clone()),
        };
        let message = NewMessage {
            send_id: SendId::for_row(self.batch, row.row),
            kind: row.kind.unwrap_or(MessageKind::Campaign),
            priority: row.priority,
            recipient: row.recipient,
            subject: row.subject,
            body: row.body,
            attachment,
        };
        Some((row.row, message))
    }
}

/// Parses the stored file as it streams in and sends its rows past the
/// checkpoint in chunks of [`CHUNK_ROWS`]; stops early on `stop`.
async fn read_chunks(
    mut stream: BlobStream,
    rows: RowsAfter,
    chunks: mpsc::Sender<Chunk>,
    stop: &CancellationToken,
) -> Result<(), Interrupted> {
    let unreadable = |error: CsvFileError| Interrupted::Failed(format!("the stored file no longer parses: {error}"));
    let mut parser = CsvUploadParser::new(CsvLimits::default());
    let mut chunk = Vec::with_capacity(CHUNK_ROWS);
    while let Some(bytes) = stream.next().await {
        let bytes = bytes.map_err(|error| Interrupted::Transient(error.to_string()))?;
        parser.feed(&bytes).map_err(unreadable)?;
        chunk.extend(parser.take_accepted().into_iter().filter_map(|row| rows.message(row)));
        while chunk.len() >= CHUNK_ROWS {
            let rest = chunk.split_off(CHUNK_ROWS);
            if stop.is_cancelled() || chunks.send(std::mem::replace(&mut chunk, rest)).await.is_err() {
                return Ok(());
            }
        }
    }
    let last = parser.finish().map_err(unreadable)?.accepted;
    chunk.extend(last.into_iter().filter_map(|row| rows.message(row)));
    if !chunk.is_empty() && !stop.is_cancelled() {
        let _ = chunks.send(chunk).await;
    }
    Ok(())
}

/// Keeps S3 keys to a safe alphabet whatever the uploaded file was called.
/// Distinct names may map to one string: keys add the part's position.
pub fn sanitize_key(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        "file".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Settings;
    use crate::domain::{SendRecord, SendStatus};
    use crate::memory::MemoryPipeline;
    use crate::store::StatusStore;

    #[test]
    fn names_that_sanitize_alike_still_get_distinct_keys() {
        let batch = BatchId::new();
        let names = [
            "Rechnung_Müller.pdf",
            "Rechnung_Möller.pdf",
            "a b.txt",
            "a_b.txt",
            "a?b.txt",
        ];
        let keys: HashSet<String> = names
            .iter()
            .enumerate()
            .map(|(i, name)| attachment_key(batch, i, name))
            .collect();
        assert_eq!(keys.len(), names.len());
    }

    fn memory() -> MemoryPipeline {
        memory_with(|_| {})
    }

    /// The memory pipeline of these tests, with `change` made to its settings.
    fn memory_with(change: impl FnOnce(&mut Settings)) -> MemoryPipeline {
        let mut settings = Settings::default();
        settings.sender.retry_base_secs = 0;
        // Long enough that a second copy meets the first one's claim.
        settings.queues.visibility_timeout_secs = 30;
        change(&mut settings);
        MemoryPipeline::new(settings)
    }

    /// `rows` rows to user0..; every 100th repeats the row before it, and
    /// every 150th has no subject.
    fn campaign_csv(rows: usize) -> String {
        let mut csv = String::from("email,subject,body\n");
        for i in 0..rows {
            let user = if i % 100 == 99 { i - 1 } else { i };
            let subject = if i % 150 == 149 { "" } else { "Hello" };
            csv.push_str(&format!("user{user}@example.com,{subject},Dear user {i}\n"));
        }
        csv
    }

    async fn upload(pipeline: &Pipeline, csv: &str, parts: &[(&str, &str)]) -> (BatchReport, BatchProgress) {
        let mut intake = Intake::new(pipeline.clone());
        intake.begin_csv("campaign.csv").await.unwrap();
        for piece in csv.as_bytes().chunks(1000) {
            intake.csv_chunk(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        for (name, content) in parts {
            intake.begin_attachment(name, "application/pdf").await.unwrap();
            intake.attachment_chunk(Bytes::from(content.to_string())).await.unwrap();
            intake.end_attachment().await.unwrap();
        }
        intake.finish().await.unwrap()
    }

    /// Runs the batch (and senders, when asked) until its phase is `until`.
    async fn run_until(memory: &MemoryPipeline, progress: BatchProgress, until: BatchPhase, senders: bool) {
        let stop = CancellationToken::new();
        let batch = tokio::spawn(memory.pipeline.clone().process_batch(progress.clone(), stop.clone()));
        let sending = senders.then(|| tokio::spawn(crate::sender::run_senders(memory.pipeline.clone(), stop.clone())));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let now = memory
                .pipeline
                .batch_progress(progress.batch_id)
                .await
                .unwrap()
                .unwrap();
            if now.phase == until {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "stuck in {:?}", now.phase);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        batch.await.unwrap();
        if let Some(sending) = sending {
            sending.await.unwrap();
        }
    }

    fn mails_per_recipient(memory: &MemoryPipeline) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for email in memory.mailer.sent.lock().unwrap().iter() {
            *counts.entry(email.to.as_str().to_string()).or_default() += 1;
        }
        counts
    }

    #[tokio::test]
    async fn an_upload_is_judged_and_stored_before_any_row_becomes_a_message() {
        let memory = memory();
        let csv = "email,subject,body,attachment\n\
                   a@example.com,Invoice,Hi,Rechnung_Müller.pdf\n\
                   b@example.com,Invoice,Hi,missing.pdf\n\
                   A@example.com,Again,Hi,\n\
                   not-an-address,S,B,\n";
        let parts = [("Rechnung_Müller.pdf", "pdf"), ("spare.pdf", "spare")];
        let (report, progress) = upload(&memory.pipeline, csv, &parts).await;
        assert_eq!(
            (report.rows, report.accepted, report.rejected, report.duplicates),
            (4, 1, 2, 1)
        );
        let rejected: Vec<(u64, Option<&str>)> = report
            .rejected_rows
            .iter()
            .map(|r| (r.row, r.field.as_deref()))
            .collect();
        assert_eq!(rejected, [(3, Some("attachment")), (5, Some("email"))]);
        assert_eq!(report.unused_attachments, ["spare.pdf"]);
        assert_eq!(report.attachments.len(), 1);
        assert_eq!(progress.phase, BatchPhase::Received);
        let stored = memory.pipeline.blobs.get(&report.archive_key).await.unwrap();
        assert_eq!(stored, csv.as_bytes(), "the file is stored byte for byte");
        let counts = memory.store.batch_counts(report.batch_id).await.unwrap();
        assert!(counts.is_empty(), "no record before processing: {counts:?}");
    }

    #[tokio::test]
    async fn a_batch_becomes_messages_chunk_by_chunk_and_ends_done_with_every_row_mailed_once() {
        let memory = memory();
        let (report, progress) = upload(&memory.pipeline, &campaign_csv(1234), &[]).await;
        assert_eq!(report.duplicates, 8);
        assert_eq!(report.rejected, 8);
        run_until(&memory, progress, BatchPhase::Done, true).await;
        let done = memory.pipeline.batch_progress(report.batch_id).await.unwrap().unwrap();
        assert_eq!(done.enqueued, report.accepted);
        assert_eq!(done.rows_read(), 1234);
        assert!(done.finished_at.is_some());
        let mails = mails_per_recipient(&memory);
        assert_eq!(mails.len() as u64, report.accepted);
        assert!(mails.values().all(|n| *n == 1), "nobody is mailed twice");
        let id = SendId::for_row(report.batch_id, 2);
        assert_eq!(memory.store.get(id).await.unwrap().unwrap().status, SendStatus::Sent);
    }

    #[tokio::test(start_paused = true)]
    async fn a_campaign_larger_than_its_queue_may_hold_waits_for_the_senders_and_ends_done() {
        let memory = memory_with(|settings| settings.queues.campaign_max_waiting = 1_000);
        let (report, progress) = upload(&memory.pipeline, &campaign_csv(3_500), &[]).await;
        let stop = CancellationToken::new();
        let batch = tokio::spawn(memory.pipeline.clone().process_batch(progress, stop.clone()));
        tokio::time::sleep(Duration::from_secs(60)).await;
        let held = memory.pipeline.batch_progress(report.batch_id).await.unwrap().unwrap();
        assert_eq!(
            held.phase,
            BatchPhase::Parsing,
            "no sender took any: the batch still waits"
        );
        // Chunks already in flight when the queue filled went on; none started after.
        let most = 1_000 + (CHUNKS_IN_FLIGHT * CHUNK_ROWS) as u64;
        assert!((1_000..=most).contains(&held.enqueued), "enqueued {}", held.enqueued);
        assert!(held.enqueued < report.accepted);
        let waiting = memory.pipeline.queue_depths().await[&QueueRef::Main(Priority::Low)].visible;
        assert_eq!(waiting, held.enqueued);
        // Stopping while it waits saves the checkpoint; the next start goes on from it.
        stop.cancel();
        batch.await.unwrap();
        run_until(&memory, held, BatchPhase::Done, true).await;
        let mails = mails_per_recipient(&memory);
        assert_eq!(mails.len() as u64, report.accepted);
        assert!(mails.values().all(|n| *n == 1), "nobody is mailed twice");
    }

    #[tokio::test]
    async fn a_batch_taken_up_again_after_a_crash_with_chunks_in_flight_sends_every_row_exactly_once() {
        let memory = memory();
        let (report, progress) = upload(&memory.pipeline, &campaign_csv(1234), &[]).await;
        let batch = report.batch_id;
        // Every row enqueued once, nothing sent yet.
        run_until(&memory, progress, BatchPhase::Enqueued, false).await;
        // The crash: the second chunk (rows 507..) was being written when the
        // engine died; its checkpoint was never saved. Of its rows, some were
        // sent already and some enqueued without QUEUED being recorded.
        let mut crashed = memory.pipeline.batch_progress(batch).await.unwrap().unwrap();
        let first_chunk_end = 508; // 500 accepted rows: 2..=508 less 4 duplicates and 3 rejected
                                   // Three chunks are past the checkpoint, all in flight at the crash:
                                   // rows sent from the second and the third.
        let sent_before: Vec<SendId> = (620..623)
            .chain(1110..1113)
            .map(|row| SendId::for_row(batch, row))
            .collect();
        for id in &sent_before {
            memory.store.mark_sent(*id, "before-crash", Utc::now()).await.unwrap();
        }
        let unrecorded: Vec<SendRecord> = {
            let mut records = Vec::new();
            for row in 630..635 {
                let mut record = memory.store.get(SendId::for_row(batch, row)).await.unwrap().unwrap();
                record.status = SendStatus::Pending;
                records.push(record);
            }
            records
        };
        memory.store.put_pending(&unrecorded).await.unwrap();
        crashed.phase = BatchPhase::Parsing;
        crashed.checkpoint_row = first_chunk_end;
        crashed.enqueued = 500;
        crashed.enqueued_at = None;
        memory.pipeline.batches.save(&crashed).await.unwrap();

        run_until(&memory, crashed, BatchPhase::Done, true).await;

        let done = memory.pipeline.batch_progress(batch).await.unwrap().unwrap();
        assert_eq!(done.resumed, 1);
        assert_eq!(done.enqueued, report.accepted, "every accepted row counted once");
        let mails = mails_per_recipient(&memory);
        assert!(mails.values().all(|n| *n == 1), "nobody is mailed twice: {mails:?}");
        assert_eq!(
            mails.len() as u64,
            report.accepted - 6,
            "all but the six sent before the crash"
        );
        for id in sent_before {
            let record = memory.store.get(id).await.unwrap().unwrap();
            assert_eq!(
                record.provider_message_id.as_deref(),
                Some("before-crash"),
                "a SENT record is never rewritten"
            );
        }
    }
}

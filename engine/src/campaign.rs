//! Accepting a campaign: an uploaded CSV (already parsed and checked by
//! [`crate::csv_upload`]) and the attachments beside it become a batch.
//!
//! The pipeline owns this, not the HTTP handler: matching rows to their
//! attachments, refusing a batch with nothing to send, storing only what the
//! batch uses under keys unique to each part, keeping the batch's full
//! report (every rejected and duplicate row) beside it, and rolling back
//! what it stored when acceptance fails, so an error means nothing was written.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::{ErrorKind, ServiceError};
use crate::blobs::BlobError;
use crate::csv_upload::{DuplicateRow, ParsedUpload, RejectedRow};
use crate::domain::{Attachment, BatchId, MessageKind};
use crate::pipeline::{IngestError, NewMessage, OnRefused, Pipeline};

/// One uploaded campaign, read in full and checked row by row.
#[derive(Debug)]
pub struct CampaignUpload {
    pub file_name: String,
    pub csv: Bytes,
    pub parsed: ParsedUpload,
    /// In the order they were uploaded; names are unique (the reader refuses twins).
    pub attachments: Vec<AttachmentPart>,
}

/// A file uploaded beside the CSV, named in its `attachment` column.
#[derive(Debug, Clone)]
pub struct AttachmentPart {
    pub name: String,
    pub content_type: String,
    pub bytes: Bytes,
}

/// What became of every row of a batch. Kept whole in the blob store (so
/// GraphQL can page through it); answered to the uploader cut to its first rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    pub batch_id: BatchId,
    pub file_name: String,
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub enqueued: usize,
    /// Accepted rows that could not be enqueued; each ended ERROR with its reason.
    pub failed_to_enqueue: usize,
    /// Attachment parts no row named: not stored.
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

/// Rows matched with their attachments: the messages to accept, the rows
/// naming a file that is not in the upload, and the parts no row names.
struct Plan {
    messages: Vec<NewMessage>,
    unknown: Vec<RejectedRow>,
    /// (storage key, part) of each attachment some accepted row uses.
    used: Vec<(String, AttachmentPart)>,
    unused: Vec<String>,
}

fn plan(batch: BatchId, parsed: &mut ParsedUpload, attachments: Vec<AttachmentPart>) -> Plan {
    let rows = std::mem::take(&mut parsed.accepted);
    let named: std::collections::HashSet<&str> = rows.iter().filter_map(|r| r.attachment.as_deref()).collect();
    let (used, unused): (Vec<_>, Vec<_>) = attachments
        .into_iter()
        .enumerate()
        .partition(|(_, part)| named.contains(part.name.as_str()));
    let used: Vec<(String, AttachmentPart)> = used
        .into_iter()
        .map(|(index, part)| (attachment_key(batch, index, &part.name), part))
        .collect();
    let stored: std::collections::HashMap<&str, Attachment> = used
        .iter()
        .map(|(key, part)| {
            let attachment = Attachment {
                key: key.clone(),
                filename: part.name.clone(),
                content_type: part.content_type.clone(),
            };
            (part.name.as_str(), attachment)
        })
        .collect();
    let mut messages = Vec::with_capacity(rows.len());
    let mut unknown = Vec::new();
    for row in rows {
        let attachment = match &row.attachment {
            None => None,
            Some(name) => match stored.get(name.as_str()) {
                Some(stored) => Some(stored.clone()),
                None => {
                    unknown.push(RejectedRow {
                        row: row.row,
                        field: Some("attachment".into()),
                        reason: format!(
                            "names `{}`, which is not a file in this upload",
                            crate::domain::content::quoted(name)
                        ),
                    });
                    continue;
                }
            },
        };
        messages.push(NewMessage {
            kind: row.kind.unwrap_or(MessageKind::Campaign),
            priority: row.priority,
            recipient: row.recipient,
            subject: row.subject,
            body: row.body,
            attachment,
        });
    }
    let unused = unused.into_iter().map(|(_, part)| part.name).collect();
    Plan {
        messages,
        unknown,
        used,
        unused,
    }
}

impl Pipeline {
    /// Accepts a campaign as one batch: archive, attachments and report
    /// stored, rows recorded PENDING and enqueued. On an error nothing stays
    /// behind (what was stored is deleted again).
    pub async fn accept_campaign(&self, mut upload: CampaignUpload) -> Result<BatchReport, CampaignError> {
        let batch_id = BatchId::new();
        let plan = plan(batch_id, &mut upload.parsed, upload.attachments);
        let mut parsed = upload.parsed;
        parsed.rejected.extend(plan.unknown);
        parsed.rejected.sort_by_key(|r| r.row);
        if plan.messages.is_empty() {
            let first = parsed.rejected.first().map(|r| format!("; {r}"));
            return Err(CampaignError::NothingAccepted {
                file_name: upload.file_name,
                rejected: parsed.rejected.len(),
                duplicates: parsed.duplicates.len(),
                first: first.unwrap_or_default(),
            });
        }
        let mut report = BatchReport {
            batch_id,
            file_name: upload.file_name,
            accepted: 0,
            duplicates: parsed.duplicates.len(),
            rejected: parsed.rejected.len(),
            enqueued: 0,
            failed_to_enqueue: 0,
            unused_attachments: plan.unused,
            rejected_rows: parsed.rejected,
            duplicate_rows: parsed.duplicates,
            created_at: Utc::now(),
        };
        let mut stored = Vec::new();
        let result = self
            .store_and_accept(&mut report, upload.csv, plan.used, plan.messages, &mut stored)
            .await;
        if let Err(error) = result {
            for key in &stored {
                self.delete_blob(key).await;
            }
            return Err(error.into());
        }
        self.metrics.record_upload(0, report.rejected, report.duplicates);
        Ok(report)
    }

    /// The writes of one campaign, in order; `stored` collects every key
    /// written, so the caller can roll them back.
    async fn store_and_accept(
        &self,
        report: &mut BatchReport,
        csv: Bytes,
        used: Vec<(String, AttachmentPart)>,
        messages: Vec<NewMessage>,
        stored: &mut Vec<String>,
    ) -> Result<(), IngestError> {
        let batch = report.batch_id;
        // The raw file first, so every accepted batch can be traced to its bytes.
        let key = archive_key(batch, &report.file_name);
        self.blobs.put(&key, csv, "text/csv").await?;
        stored.push(key);
        for (key, part) in used {
            self.blobs.put(&key, part.bytes, &part.content_type).await?;
            stored.push(key);
        }
        report.accepted = messages.len();
        // Written before the rows, so a batch id given out always resolves.
        self.put_report(report).await?;
        stored.push(report_key(batch));
        let accepted = self.accept(Some(batch), messages, OnRefused::RecordError).await?;
        report.enqueued = accepted.enqueued;
        report.failed_to_enqueue = accepted.failed.len();
        if report.failed_to_enqueue > 0 {
            // Keep the stored report's counts true; the batch stands either way.
            if let Err(error) = self.put_report(report).await {
                tracing::warn!(%error, %batch, "could not update the batch report's enqueue counts");
            }
        }
        Ok(())
    }

    async fn put_report(&self, report: &BatchReport) -> Result<(), BlobError> {
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
    use super::*;
    use crate::csv_upload::parse_all;

    fn part(name: &str) -> AttachmentPart {
        AttachmentPart {
            name: name.into(),
            content_type: "application/pdf".into(),
            bytes: Bytes::from(name.to_string()),
        }
    }

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
        let keys: std::collections::HashSet<String> = names
            .iter()
            .enumerate()
            .map(|(i, name)| attachment_key(batch, i, name))
            .collect();
        assert_eq!(keys.len(), names.len());
    }

    #[test]
    fn each_row_gets_its_own_attachment_and_unnamed_parts_are_not_stored() {
        let csv = "email,subject,body,attachment\n\
                   mueller@example.com,Invoice,Hi,Rechnung_Müller.pdf\n\
                   moeller@example.com,Invoice,Hi,Rechnung_Möller.pdf\n\
                   x@example.com,Invoice,Hi,missing.pdf\n";
        let mut parsed = parse_all(csv.as_bytes(), 16).unwrap();
        let batch = BatchId::new();
        let parts = vec![
            part("Rechnung_Müller.pdf"),
            part("spare.pdf"),
            part("Rechnung_Möller.pdf"),
        ];
        let plan = plan(batch, &mut parsed, parts);
        let by_recipient: Vec<(&str, &str, &str)> = plan
            .messages
            .iter()
            .map(|m| {
                let a = m.attachment.as_ref().unwrap();
                (m.recipient.as_str(), a.filename.as_str(), a.key.as_str())
            })
            .collect();
        assert_eq!(by_recipient[0].1, "Rechnung_Müller.pdf");
        assert_eq!(by_recipient[1].1, "Rechnung_Möller.pdf");
        assert_ne!(by_recipient[0].2, by_recipient[1].2, "distinct keys");
        assert_eq!(plan.used.len(), 2);
        assert_eq!(plan.unused, ["spare.pdf"]);
        assert_eq!(plan.unknown.len(), 1);
        assert_eq!(plan.unknown[0].row, 4);
    }

    #[test]
    fn a_report_answered_whole_counts_but_only_its_first_rows() {
        let rejected = (0..250)
            .map(|i| RejectedRow {
                row: i + 2,
                field: Some("email".into()),
                reason: "bad".into(),
            })
            .collect();
        let report = BatchReport {
            batch_id: BatchId::new(),
            file_name: "f.csv".into(),
            accepted: 1,
            duplicates: 0,
            rejected: 250,
            enqueued: 1,
            failed_to_enqueue: 0,
            unused_attachments: vec![],
            rejected_rows: rejected,
            duplicate_rows: vec![],
            created_at: Utc::now(),
        };
        let (cut, truncated) = report.first_rows(100);
        assert!(truncated);
        assert_eq!((cut.rejected, cut.rejected_rows.len()), (250, 100));
    }
}

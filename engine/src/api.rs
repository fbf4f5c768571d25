//! The HTTP API: ingest (CSV campaigns, single notifications), health,
//! metrics and GraphQL, behind an optional API key.

use std::collections::HashMap;

use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::csv_upload::{CsvLimits, CsvUploadParser, DuplicateRow, RejectedRow};
use crate::domain::{Attachment, BatchId, EmailAddress, MessageKind, Priority};
use crate::graphql::StatusSchema;
use crate::pipeline::{IngestError, NewMessage, Pipeline};
use crate::queue::QueueRef;

#[derive(Clone)]
pub struct AppState {
    pub pipeline: Pipeline,
    pub schema: StatusSchema,
}

pub fn router(state: AppState) -> Router {
    let max_upload = state.pipeline.settings.api.max_upload_bytes;
    let protected = Router::new()
        .route("/campaigns/upload", post(upload_campaign))
        .route("/notifications", post(post_notification))
        .route("/graphql", post(graphql))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    Router::new()
        .merge(protected)
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_upload))
        .with_state(state)
}

/// An error answered as JSON `{ "error": … }` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Option<serde_json::Value>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            details: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(details) = self.details {
            body["details"] = details;
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        tracing::error!(%error, "ingest failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("could not accept the messages: {error}"),
        )
    }
}

async fn require_api_key(State(state): State<AppState>, headers: HeaderMap, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.pipeline.settings.api.key {
        let given = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        // Constant-time comparison: the key's length is not secret, its bytes are.
        let matches = given.is_some_and(|given| {
            given.len() == expected.len()
                && given
                    .bytes()
                    .zip(expected.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !matches {
            let message = if given.is_some() {
                "the x-api-key header is wrong"
            } else {
                "an x-api-key header is required"
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
        }
    }
    next.run(request).await
}

/// Counters and latencies, plus every queue's depth read at scrape time.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let pipeline = &state.pipeline;
    let queues = Priority::ALL.into_iter().flat_map(|p| {
        [
            (QueueRef::Main(p), p.to_string()),
            (QueueRef::DeadLetter(p), format!("{p}-dlq")),
        ]
    });
    let depths = futures::future::join_all(
        queues.map(|(queue, name)| async move { (name, pipeline.queues.depth(queue).await) }),
    )
    .await;
    let mut text = pipeline.metrics.render_prometheus();
    text.push_str(
        "# HELP courier_queue_messages Messages in each queue (GetQueueAttributes at scrape time).\n# TYPE courier_queue_messages gauge\n",
    );
    for (name, depth) in depths {
        // A queue that cannot be read is left out rather than failing the scrape.
        let Ok(depth) = depth else { continue };
        for (state, value) in [
            ("visible", depth.visible),
            ("in_flight", depth.in_flight),
            ("delayed", depth.delayed),
        ] {
            text.push_str(&format!(
                "courier_queue_messages{{queue=\"{name}\",state=\"{state}\"}} {value}\n"
            ));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn graphql(State(state): State<AppState>, request: GraphQLRequest) -> GraphQLResponse {
    state.schema.execute(request.into_inner()).await.into()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadReport {
    pub batch_id: BatchId,
    pub file_name: String,
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub enqueued: usize,
    /// Accepted rows that could not be enqueued; each ended ERROR with its reason.
    pub failed_to_enqueue: usize,
    pub rejected_rows: Vec<RejectedRow>,
    pub duplicate_rows: Vec<DuplicateRow>,
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    let status = error.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "the upload is larger than the configured limit (api.max_upload_bytes)".to_string()
    } else {
        format!("malformed multipart upload: {}", error.body_text())
    };
    ApiError::new(status, message)
}

/// `POST /campaigns/upload`: a multipart form with the CSV in the part `file`
/// and, optionally, attachments in further file parts, named in the CSV's
/// `attachment` column by file name.
async fn upload_campaign(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<UploadReport>), ApiError> {
    let pipeline = &state.pipeline;
    let limit = pipeline.settings.api.max_upload_bytes;
    // Refuse a declared oversize body before reading any of it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the upload is {} bytes; the limit is {limit} (api.max_upload_bytes)",
                declared.unwrap_or_default()
            ),
        ));
    }

    let mut parser = CsvUploadParser::new(CsvLimits::default());
    let mut file_name = None;
    let mut raw_csv = Vec::new();
    let mut attachments: HashMap<String, (String, Bytes)> = HashMap::new();
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            if file_name.is_some() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "the upload has more than one `file` part",
                ));
            }
            file_name = Some(field.file_name().unwrap_or("upload.csv").to_string());
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                parser
                    .feed(&chunk)
                    .map_err(|e| csv_file_error(file_name.as_deref(), e))?;
                raw_csv.extend_from_slice(&chunk);
            }
        } else if let Some(attachment_name) = field.file_name().map(str::to_string) {
            let content_type = field.content_type().unwrap_or("application/octet-stream").to_string();
            let bytes = field.bytes().await.map_err(multipart_error)?;
            attachments.insert(attachment_name, (content_type, bytes));
        }
    }
    let file_name = file_name
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "the upload has no `file` part with the CSV"))?;
    let mut parsed = parser.finish().map_err(|e| csv_file_error(Some(&file_name), e))?;

    let batch_id = BatchId::new();
    // The raw file is archived first, so every accepted batch can be traced to its bytes.
    let archive_key = format!("uploads/{batch_id}/{}", sanitize_key(&file_name));
    pipeline
        .blobs
        .put(&archive_key, Bytes::from(raw_csv), "text/csv")
        .await
        .map_err(IngestError::from)?;
    let mut stored_attachments: HashMap<String, Attachment> = HashMap::new();
    for (name, (content_type, bytes)) in attachments {
        let key = format!("attachments/{batch_id}/{}", sanitize_key(&name));
        pipeline
            .blobs
            .put(&key, bytes, &content_type)
            .await
            .map_err(IngestError::from)?;
        stored_attachments.insert(
            name.clone(),
            Attachment {
                key,
                filename: name,
                content_type,
            },
        );
    }

    let mut messages = Vec::with_capacity(parsed.accepted.len());
    let mut unknown_attachments = Vec::new();
    for row in std::mem::take(&mut parsed.accepted) {
        let attachment = match &row.attachment {
            None => None,
            Some(name) => match stored_attachments.get(name) {
                Some(stored) => Some(stored.clone()),
                None => {
                    unknown_attachments.push(RejectedRow {
                        row: row.row,
                        field: Some("attachment".into()),
                        reason: format!("names `{name}`, which is not a file in this upload"),
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
    parsed.rejected.extend(unknown_attachments);
    parsed.rejected.sort_by_key(|r| r.row);

    let accepted = pipeline.accept(Some(batch_id), messages).await?;
    pipeline
        .metrics
        .record_upload(0, parsed.rejected.len(), parsed.duplicates.len());
    let report = UploadReport {
        batch_id,
        file_name,
        accepted: accepted.send_ids.len(),
        duplicates: parsed.duplicates.len(),
        rejected: parsed.rejected.len(),
        enqueued: accepted.enqueued,
        failed_to_enqueue: accepted.failed.len(),
        rejected_rows: parsed.rejected,
        duplicate_rows: parsed.duplicates,
    };
    tracing::info!(
        batch_id = %report.batch_id,
        file = %report.file_name,
        accepted = report.accepted,
        duplicates = report.duplicates,
        rejected = report.rejected,
        "campaign accepted"
    );
    Ok((StatusCode::ACCEPTED, Json(report)))
}

fn csv_file_error(file_name: Option<&str>, error: crate::csv_upload::CsvFileError) -> ApiError {
    let file = file_name.unwrap_or("the CSV");
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{file}: {error}"))
}

/// Keeps S3 keys to a safe alphabet whatever the uploaded file was called.
fn sanitize_key(name: &str) -> String {
    let cleaned: String = name
        .chars()
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: Option<String>,
    /// Used to compose subject and body when they are not given.
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationAccepted {
    pub send_id: String,
    pub priority: Priority,
}

fn unprocessable(field: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: format!("`{field}` {reason}"),
        details: Some(json!({ "field": field })),
    }
}

/// `POST /notifications`: one reminder, offer or subscription message.
async fn post_notification(
    State(state): State<AppState>,
    Json(request): Json<NotificationRequest>,
) -> Result<(StatusCode, Json<NotificationAccepted>), ApiError> {
    let kind: MessageKind = request.kind.parse().map_err(|e| unprocessable("type", e))?;
    if kind == MessageKind::Campaign {
        return Err(unprocessable(
            "type",
            "must be reminder, offer or subscription (campaigns are uploaded as CSV)",
        ));
    }
    let recipient = EmailAddress::parse(&request.recipient).map_err(|e| unprocessable("recipient", e))?;
    let subject = request
        .subject
        .filter(|s| !s.trim().is_empty())
        .or_else(|| request.fields.get("subject").cloned())
        .unwrap_or_else(|| default_subject(kind).to_string());
    if subject.contains(['\r', '\n']) {
        return Err(unprocessable("subject", "contains a line break"));
    }
    let body = match request.body.filter(|b| !b.trim().is_empty()) {
        Some(body) => body,
        None if !request.fields.is_empty() => request
            .fields
            .iter()
            .filter(|(k, _)| k.as_str() != "subject")
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
        None => return Err(unprocessable("body", "is required when no `fields` are given")),
    };
    let accepted = state
        .pipeline
        .accept(
            None,
            vec![NewMessage {
                kind,
                priority: None,
                recipient,
                subject,
                body,
                attachment: None,
            }],
        )
        .await?;
    if let Some((_, reason)) = accepted.failed.first() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason.clone()));
    }
    let (send_id, priority) = accepted.send_ids[0];
    Ok((
        StatusCode::ACCEPTED,
        Json(NotificationAccepted {
            send_id: send_id.to_string(),
            priority,
        }),
    ))
}

fn default_subject(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Reminder => "Reminder",
        MessageKind::Offer => "An offer for you",
        MessageKind::Subscription => "Your subscription",
        MessageKind::Campaign => "News",
    }
}

//! The HTTP API: ingest (CSV campaigns, single notifications), health,
//! metrics and GraphQL, behind an optional API key.
//!
//! The handlers only translate HTTP to the domain and back: what a campaign
//! or a notification becomes is the pipeline's business. Each route has its
//! own body limit, and the work that writes runs in a task of its own, so a
//! client that hangs up mid-request cannot leave it half done.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::batches::{BatchPhase, BatchProgress};
use crate::campaign::{BatchReport, CampaignError, Intake};
use crate::domain::content::{check_body, check_subject, quoted};
use crate::domain::{EmailAddress, MessageKind, Priority};
use crate::graphql::StatusSchema;
use crate::pipeline::{IngestError, NewMessage, OnRefused, Pipeline};

#[derive(Clone)]
pub struct AppState {
    pub pipeline: Pipeline,
    pub schema: StatusSchema,
    /// Hands each received batch to the background (`campaign::run_batches`).
    pub batch_work: tokio::sync::mpsc::UnboundedSender<BatchProgress>,
}

pub fn router(state: AppState) -> Router {
    let api = &state.pipeline.settings.api;
    let body_timeout = std::time::Duration::from_secs(state.pipeline.settings.server.body_read_timeout_secs);
    let protected = Router::new()
        .route(
            "/campaigns/upload",
            post(upload_campaign).layer(DefaultBodyLimit::max(api.max_upload_bytes)),
        )
        .route(
            "/notifications",
            post(post_notification).layer(DefaultBodyLimit::max(api.max_notification_bytes)),
        )
        .route(
            "/graphql",
            post(graphql).layer(DefaultBodyLimit::max(api.max_graphql_bytes)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    Router::new()
        .merge(protected)
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        // A body that stalls is abandoned with 408 rather than holding a task.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_timeout))
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

    fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
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

/// A 503 means nothing was written: the pipeline rolled back before answering.
impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        tracing::error!(%error, "ingest failed; rolled back");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "could not accept the messages now (a storage service did not answer); nothing was recorded, try again",
        )
    }
}

impl From<CampaignError> for ApiError {
    fn from(error: CampaignError) -> Self {
        match error {
            CampaignError::Ingest(error) => error.into(),
            CampaignError::File { file_name, error } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{}: {error}", quoted(&file_name)),
            ),
            refused @ CampaignError::NothingAccepted { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, refused.to_string())
            }
        }
    }
}

/// A JSON body that could not be read, answered in the API's own shape.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if timed_out(&rejection) {
            return body_timeout();
        }
        ApiError::new(rejection.status(), shortened(&rejection.body_text()))
    }
}

/// Whether reading a body failed because it stalled (the router's body timeout).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

fn body_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "the request body stopped arriving (server.body_read_timeout_secs); nothing was recorded",
    )
}

/// A parser's message (which may quote the input), cut to a readable length.
fn shortened(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

async fn require_api_key(State(state): State<AppState>, headers: HeaderMap, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.pipeline.settings.api.key {
        let given = headers.get("x-api-key").map(|v| v.as_bytes());
        // Constant-time: the key's length is not secret, its bytes are.
        let expected = expected.expose_secret().as_bytes();
        let matches = given.is_some_and(|given| bool::from(given.ct_eq(expected)));
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
    let depths = state.pipeline.queue_depths().await;
    let text = state.pipeline.metrics.render_prometheus(&depths);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// `GET /stats`: the same figures as `/metrics`, as one typed JSON reading
/// (`vocabulary::stats::Snapshot`), which the TUI draws.
async fn stats(State(state): State<AppState>) -> Json<vocabulary::stats::Snapshot> {
    let depths = state.pipeline.queue_depths().await;
    Json(state.pipeline.metrics.snapshot(depths))
}

/// `POST /graphql`: a JSON GraphQL request (no multipart: the API has no
/// uploads), within its body limit and the schema's depth and complexity limits.
async fn graphql(
    State(state): State<AppState>,
    request: Result<Json<async_graphql::Request>, JsonRejection>,
) -> Result<Json<async_graphql::Response>, ApiError> {
    let Json(request) = request?;
    Ok(Json(state.schema.execute(request).await))
}

/// What an upload answers: the batch's report with its first rows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadReport {
    #[serde(flatten)]
    pub report: BatchReport,
    /// RECEIVED: stored and checked; no row is a message yet.
    pub phase: BatchPhase,
    /// Where to follow the batch.
    pub progress: String,
    /// Present when rows were left out of this answer: where to read them all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more_rows: Option<String>,
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if timed_out(&error) {
        return body_timeout();
    }
    let status = error.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "the upload is larger than the configured limit (api.max_upload_bytes)".to_string()
    } else {
        format!("malformed multipart upload: {}", shortened(&error.body_text()))
    };
    ApiError::new(status, message)
}

/// The longest attachment file name taken.
const MAX_FILE_NAME_BYTES: usize = 255;

/// Streams the multipart form into `intake`: the CSV (checked as it
/// arrives) and the attachments, each stored as it comes.
async fn stream_upload(intake: &mut Intake, mut multipart: Multipart) -> Result<(), ApiError> {
    let mut file_name = None;
    let mut names = std::collections::HashSet::new();
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() == Some("file") {
            if file_name.is_some() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "the upload has more than one `file` part",
                ));
            }
            let name = field.file_name().unwrap_or("upload.csv").to_string();
            intake.begin_csv(&name).await?;
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                intake.csv_chunk(chunk).await?;
            }
            file_name = Some(name);
        } else if let Some(name) = field.file_name().map(str::to_string) {
            if name.len() > MAX_FILE_NAME_BYTES {
                let message = format!(
                    "an attachment's file name is {} bytes; at most {MAX_FILE_NAME_BYTES}",
                    name.len()
                );
                return Err(ApiError::new(StatusCode::BAD_REQUEST, message));
            }
            if !names.insert(name.clone()) {
                let message = format!(
                    "two attachment parts are both named `{}`; each needs its own name",
                    quoted(&name)
                );
                return Err(ApiError::new(StatusCode::BAD_REQUEST, message));
            }
            let content_type = field.content_type().unwrap_or("application/octet-stream").to_string();
            intake.begin_attachment(&name, &content_type).await?;
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                intake.attachment_chunk(chunk).await?;
            }
            intake.end_attachment().await?;
        }
    }
    match file_name {
        Some(_) => Ok(()),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the upload has no `file` part with the CSV",
        )),
    }
}

/// `POST /campaigns/upload`: a multipart form with the CSV in the part `file`
/// and, optionally, attachments in further file parts, named in the CSV's
/// `attachment` column by file name. Answered 202 once the file is stored
/// and every row has its verdict; the rows become messages afterwards
/// (GraphQL `batch(batchId)` shows how far).
async fn upload_campaign(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Result<(StatusCode, Json<UploadReport>), ApiError> {
    let limit = state.pipeline.settings.api.max_upload_bytes;
    // Refuse a declared oversize body before reading any of it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(length) = declared.filter(|length| *length > limit) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the upload is {length} bytes; the limit is {limit} (api.max_upload_bytes)"),
        ));
    }
    let mut intake = Intake::new(state.pipeline.clone());
    if let Err(error) = stream_upload(&mut intake, multipart).await {
        intake.abandon().await;
        return Err(error);
    }
    // Finishing runs to its end (or removes what it stored) even if the client hangs up now.
    let body_read = tokio::time::Instant::now();
    let (report, progress) = detached(intake.finish()).await??;
    let finish_ms = body_read.elapsed().as_secs_f64() * 1000.0;
    if state.batch_work.send(progress).is_err() {
        tracing::warn!(batch_id = %report.batch_id, "the engine is stopping; the batch is processed at its next start");
    }
    let (report, truncated) = report.first_rows(state.pipeline.settings.api.max_reported_rows);
    tracing::info!(
        batch_id = %report.batch_id,
        file = %report.file_name,
        accepted = report.accepted,
        duplicates = report.duplicates,
        rejected = report.rejected,
        finish_ms,
        "campaign received (finish_ms: from the last byte read to the answer)"
    );
    let more_rows = truncated.then(|| {
        format!(
            "only the first {} rejected and duplicate rows are listed; all of them: GraphQL batch(batchId: \"{}\") {{ rejectedRows(first, after) duplicateRows(first, after) }}",
            state.pipeline.settings.api.max_reported_rows, report.batch_id
        )
    });
    let progress = format!(
        "rows become messages in the background; follow them with GraphQL batch(batchId: \"{}\") {{ phase rowsRead enqueued counts {{ status count }} }}",
        report.batch_id
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(UploadReport {
            report,
            phase: BatchPhase::Received,
            progress,
            more_rows,
        }),
    ))
}

/// Runs `work` in a task of its own and waits for it: if the request's
/// future is dropped (the client hung up), the task still finishes.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work).await.map_err(|error| {
        tracing::error!(%error, "ingest task failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the ingest task failed")
    })
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
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("`{field}` {reason}"))
        .with_details(json!({ "field": field }))
}

/// A notification request as a message, by the same field rules as a CSV row.
pub fn notification_message(request: NotificationRequest) -> Result<NewMessage, ApiError> {
    let kind: MessageKind = request
        .kind
        .parse()
        .map_err(|e: vocabulary::UnknownName| unprocessable("type", quoted(&e.to_string())))?;
    if kind == MessageKind::Campaign {
        return Err(unprocessable(
            "type",
            "must be reminder, offer or subscription (campaigns are uploaded as CSV)",
        ));
    }
    let recipient = EmailAddress::parse(&request.recipient)
        .map_err(|e| unprocessable("recipient", format!("`{}` {e}", quoted(request.recipient.trim()))))?;
    let subject = request
        .subject
        .filter(|s| !s.trim().is_empty())
        .or_else(|| request.fields.get("subject").cloned())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| default_subject(kind).to_string());
    check_subject(&subject).map_err(|e| unprocessable("subject", e))?;
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
    check_body(&body).map_err(|e| unprocessable("body", e))?;
    Ok(NewMessage {
        send_id: crate::domain::SendId::new(),
        kind,
        priority: None,
        recipient,
        subject,
        body,
        attachment: None,
    })
}

/// `POST /notifications`: one reminder, offer or subscription message.
/// Answered 202 once it is on its queue; 503 (and nothing recorded) if not.
async fn post_notification(
    State(state): State<AppState>,
    request: Result<Json<NotificationRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<NotificationAccepted>), ApiError> {
    let Json(request) = request?;
    let message = notification_message(request)?;
    let pipeline = state.pipeline.clone();
    let accepted = detached(async move { pipeline.accept(None, vec![message], OnRefused::Withdraw).await }).await??;
    if let Some((_, reason)) = accepted.failed.first() {
        tracing::warn!(%reason, "notification withdrawn: SQS refused it");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the queue did not take the message; nothing was recorded, try again",
        ));
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

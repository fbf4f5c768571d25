//! Sending one email: a domain trait and its adapters — SES v2, SES v1,
//! any SMTP relay (lettre), and a dry run. Provider errors are mapped to what
//! the sender must do: retry later (throttled, transient) or give up (rejected).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sesv2::error::ProvideErrorMetadata;
use bytes::Bytes;
use lettre::message::{header::ContentType, Attachment as MimeAttachment, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{MailerKind, SmtpSettings, SmtpTls};
use crate::domain::EmailAddress;
use crate::sender::schedule::SendQuota;

/// A fully resolved email, ready for a provider.
#[derive(Debug, Clone)]
pub struct Email {
    pub from: String,
    pub to: EmailAddress,
    pub subject: String,
    pub text: String,
    pub attachment: Option<EmailAttachment>,
}

#[derive(Debug, Clone)]
pub struct EmailAttachment {
    pub filename: String,
    pub content_type: String,
    pub bytes: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The provider asked us to slow down: retry later, not an error.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The provider refused this message for good.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Anything that may succeed on another try (network, 5xx).
    #[error("transient failure: {0}")]
    Transient(String),
    /// The account's daily sending quota is used up: nothing more is
    /// accepted until it resets. Not the message's fault; keep it safe.
    #[error("daily quota used up: {0}")]
    QuotaExhausted(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends and returns the provider's message id.
    async fn send(&self, email: &Email) -> Result<String, MailError>;

    /// The account's sending limits; `None` when the provider has none
    /// (an SMTP relay, a dry run).
    async fn send_quota(&self) -> Result<Option<SendQuota>, MailError> {
        Ok(None)
    }
}

/// SES's words for a used-up daily quota (v1's `Throttling` message; v2
/// answers `LimitExceededException` with the same text).
const DAILY_QUOTA_TEXT: &str = "Daily message quota exceeded";

/// SES error codes meaning "slow down" (v1 and v2 spell them differently).
const THROTTLE_CODES: [&str; 4] = [
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "LimitExceededException",
];
/// SES error codes meaning "this message will never be accepted".
const REJECT_CODES: [&str; 9] = [
    "MessageRejected",
    "MailFromDomainNotVerified",
    "MailFromDomainNotVerifiedException",
    "AccountSendingPausedException",
    "AccountSuspendedException",
    "SendingPausedException",
    "BadRequestException",
    "InvalidParameterValue",
    "NotFoundException",
];

/// Maps an SDK error to what the sender should do with the message.
fn classify<E, R>(error: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> MailError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let text = crate::aws::describe(error);
    let service_error = error.as_service_error();
    if service_error
        .and_then(|e| e.message())
        .is_some_and(|m| m.contains(DAILY_QUOTA_TEXT))
    {
        return MailError::QuotaExhausted(text);
    }
    match service_error.and_then(|e| e.code()) {
        Some(code) if THROTTLE_CODES.contains(&code) => MailError::Throttled(text),
        Some(code) if REJECT_CODES.contains(&code) => MailError::Rejected(text),
        _ => MailError::Transient(text),
    }
}

/// The email as MIME, for providers' raw-message APIs (attachments need it).
pub fn to_mime(email: &Email) -> Result<Vec<u8>, MailError> {
    let parse = |address: &str| {
        address
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| MailError::Rejected(format!("address `{address}`: {e}")))
    };
    let builder = lettre::Message::builder()
        .from(parse(&email.from)?)
        .to(parse(email.to.as_str())?)
        .subject(&email.subject);
    let text_part = SinglePart::plain(email.text.clone());
    let message = match &email.attachment {
        None => builder.singlepart(text_part),
        Some(attachment) => {
            let content_type = ContentType::parse(&attachment.content_type)
                .unwrap_or_else(|_| ContentType::parse("application/octet-stream").expect("valid"));
            builder.multipart(MultiPart::mixed().singlepart(text_part).singlepart(
                MimeAttachment::new(attachment.filename.clone()).body(attachment.bytes.to_vec(), content_type),
            ))
        }
    }
    .map_err(|e| MailError::Rejected(format!("building MIME message: {e}")))?;
    Ok(message.formatted())
}

pub struct SesV2Mailer {
    client: aws_sdk_sesv2::Client,
}

impl SesV2Mailer {
    pub fn new(client: aws_sdk_sesv2::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl Mailer for SesV2Mailer {
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message, RawMessage};
        let content = match &email.attachment {
            None => {
                let text = |t: &str| {
                    Content::builder()
                        .data(t)
                        .charset("UTF-8")
                        .build()
                        .expect("data is set")
                };
                EmailContent::builder()
                    .simple(
                        Message::builder()
                            .subject(text(&email.subject))
                            .body(Body::builder().text(text(&email.text)).build())
                            .build(),
                    )
                    .build()
            }
            Some(_) => EmailContent::builder()
                .raw(
                    RawMessage::builder()
                        .data(aws_sdk_sesv2::primitives::Blob::new(to_mime(email)?))
                        .build()
                        .expect("data is set"),
                )
                .build(),
        };
        let output = self
            .client
            .send_email()
            .from_email_address(&email.from)
            .destination(Destination::builder().to_addresses(email.to.as_str()).build())
            .content(content)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(output.message_id.unwrap_or_default())
    }

    async fn send_quota(&self) -> Result<Option<SendQuota>, MailError> {
        let account = self.client.get_account().send().await.map_err(|e| classify(&e))?;
        Ok(account
            .send_quota()
            .map(|q| SendQuota::from_figures(q.max_send_rate(), q.max24_hour_send(), q.sent_last24_hours())))
    }
}

pub struct SesV1Mailer {
    client: aws_sdk_ses::Client,
}

impl SesV1Mailer {
    pub fn new(client: aws_sdk_ses::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl Mailer for SesV1Mailer {
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        use aws_sdk_ses::types::{Body, Content, Destination, Message, RawMessage};
        if email.attachment.is_some() {
            let raw = RawMessage::builder()
                .data(aws_sdk_ses::primitives::Blob::new(to_mime(email)?))
                .build()
                .expect("data is set");
            let output = self
                .client
                .send_raw_email()
                .source(&email.from)
                .destinations(email.to.as_str())
                .raw_message(raw)
                .send()
                .await
                .map_err(|e| classify(&e))?;
            return Ok(output.message_id);
        }
        let text = |t: &str| {
            Content::builder()
                .data(t)
                .charset("UTF-8")
                .build()
                .expect("data is set")
        };
        let output = self
            .client
            .send_email()
            .source(&email.from)
            .destination(Destination::builder().to_addresses(email.to.as_str()).build())
            .message(
                Message::builder()
                    .subject(text(&email.subject))
                    .body(Body::builder().text(text(&email.text)).build())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(output.message_id)
    }

    async fn send_quota(&self) -> Result<Option<SendQuota>, MailError> {
        let q = self.client.get_send_quota().send().await.map_err(|e| classify(&e))?;
        Ok(Some(SendQuota::from_figures(
            q.max_send_rate(),
            q.max24_hour_send(),
            q.sent_last24_hours(),
        )))
    }
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl SmtpMailer {
    pub fn new(settings: &SmtpSettings) -> Result<Self, MailError> {
        let builder = match settings.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
                .map_err(|e| MailError::Rejected(format!("mailer.smtp.host `{}`: {e}", settings.host)))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
                .map_err(|e| MailError::Rejected(format!("mailer.smtp.host `{}`: {e}", settings.host)))?,
        };
        let mut builder = builder.port(settings.port).timeout(Some(Duration::from_secs(30)));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                user.clone(),
                password.clone(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        let mime = to_mime(email)?;
        let envelope = lettre::address::Envelope::new(
            Some(
                email
                    .from
                    .parse()
                    .map_err(|e| MailError::Rejected(format!("from: {e}")))?,
            ),
            vec![email
                .to
                .as_str()
                .parse()
                .map_err(|e| MailError::Rejected(format!("to: {e}")))?],
        )
        .map_err(|e| MailError::Rejected(e.to_string()))?;
        match self.transport.send_raw(&envelope, &mime).await {
            Ok(response) => Ok(response.message().collect::<Vec<_>>().join(" ")),
            Err(error) if error.is_permanent() => Err(MailError::Rejected(error.to_string())),
            // 4xx replies include "421 too many connections" and greylisting.
            Err(error) if error.is_transient() => Err(MailError::Throttled(error.to_string())),
            Err(error) => Err(MailError::Transient(error.to_string())),
        }
    }
}

/// Sends nothing; for measuring the pipeline without a provider.
#[derive(Default)]
pub struct DryRunMailer;

#[async_trait]
impl Mailer for DryRunMailer {
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        tracing::debug!(to = %email.to, subject = %email.subject, "dry run: not sent");
        Ok(format!("dry-run-{}", uuid::Uuid::new_v4()))
    }
}

/// The mailer the settings ask for.
pub fn build_mailer(
    kind: MailerKind,
    smtp: &SmtpSettings,
    clients: &crate::aws::AwsClients,
) -> Result<std::sync::Arc<dyn Mailer>, MailError> {
    Ok(match kind {
        MailerKind::Sesv2 => std::sync::Arc::new(SesV2Mailer::new(clients.sesv2.clone())),
        MailerKind::Ses => std::sync::Arc::new(SesV1Mailer::new(clients.ses.clone())),
        MailerKind::Smtp => std::sync::Arc::new(SmtpMailer::new(smtp)?),
        MailerKind::DryRun => std::sync::Arc::new(DryRunMailer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attachment_makes_a_multipart_mime_message() {
        let email = Email {
            from: "courier@example.com".into(),
            to: EmailAddress::parse("ann@example.com").unwrap(),
            subject: "Your invoice".into(),
            text: "Attached.".into(),
            attachment: Some(EmailAttachment {
                filename: "invoice.pdf".into(),
                content_type: "application/pdf".into(),
                bytes: Bytes::from_static(b"%PDF-1.4 fake"),
            }),
        };
        let mime = String::from_utf8(to_mime(&email).unwrap()).unwrap();
        assert!(mime.contains("Subject: Your invoice"));
        assert!(mime.contains("multipart/mixed"));
        assert!(mime.contains("filename=\"invoice.pdf\""));
    }

    #[test]
    fn an_unparseable_sender_address_is_a_permanent_rejection() {
        let email = Email {
            from: "not an address".into(),
            to: EmailAddress::parse("ann@example.com").unwrap(),
            subject: "s".into(),
            text: "t".into(),
            attachment: None,
        };
        assert!(matches!(to_mime(&email), Err(MailError::Rejected(_))));
    }
}

//! The AWS stack Courier runs against, started and stopped from Rust.
//!
//! - [`StackTarget`]: where the services live — host-mode emulators started
//!   here (the default; no Docker, and an SMTP server beside them), an
//!   existing endpoint, or real AWS.
//! - [`Stack`]: a running (or connected) stack: its endpoints, the SDK config
//!   to reach it, and the emulator processes, stopped when it drops.
//! - [`container`]: the testcontainers target (LocalStack's container, Docker).
//! - [`install`]: first-use installation of the pinned emulators into a cache.
//! - [`process`]: emulator processes that never outlive their stack.
//! - [`sent_mail`]: the emulators' record of the email they accepted (SES
//!   v1 in LocalStack, SES v2 in aws-ses-v2-local or moto, SMTP in the stack's aiosmtpd).

pub mod container;
pub mod install;
pub mod process;
pub mod sent_mail;
mod stack;

pub use sent_mail::{MailDetail, SentEmail};
pub use stack::{Endpoints, Service, SmtpEndpoint, SmtpFaultRule, Stack, StackOptions, StackTarget};

use std::path::PathBuf;

/// Everything that can go wrong starting or reaching the stack.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{program} is needed for the local stack but was not found: {install_hint}")]
    MissingPrerequisite {
        program: &'static str,
        install_hint: &'static str,
    },
    #[error("installing {what} failed (log: {}):\n{tail}", log.display())]
    Install { what: String, log: PathBuf, tail: String },
    #[error("could not start {process}: {reason}")]
    Spawn { process: String, reason: String },
    #[error("{service} did not become ready at {endpoint} within {seconds}s (log: {})", log.display())]
    NotReady {
        service: String,
        endpoint: String,
        seconds: u64,
        log: PathBuf,
    },
    #[error("{service} could not listen on {endpoint}: another process took the port (log: {})", log.display())]
    PortTaken {
        service: String,
        endpoint: String,
        log: PathBuf,
    },
    #[error("{process} exited during start-up with {status} (log: {})", log.display())]
    ExitedEarly {
        process: String,
        status: String,
        log: PathBuf,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the sent-mail record from {endpoint}: {reason}")]
    SentMail { endpoint: String, reason: String },
    #[error("{0}")]
    Config(String),
}

//! The enums that name what a message is, where it is, and how a run went.

/// What a message is for; routing rules map each kind to a priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageKind {
    Reminder,
    Offer,
    Subscription,
    /// A row of an uploaded campaign file with no type of its own.
    Campaign,
}

impl MessageKind {
    pub const ALL: [MessageKind; 4] = [
        MessageKind::Reminder,
        MessageKind::Offer,
        MessageKind::Subscription,
        MessageKind::Campaign,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Reminder => "reminder",
            MessageKind::Offer => "offer",
            MessageKind::Subscription => "subscription",
            MessageKind::Campaign => "campaign",
        }
    }
}

named_enum!(MessageKind, "type");

/// Where a message is in its life. SENT and ERROR are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SendStatus {
    /// Accepted and recorded, not yet on a queue.
    Pending,
    /// On its priority queue.
    Queued,
    /// Handed to the mail provider, which accepted it.
    Sent,
    /// Given up on: rejected by the provider, failed to enqueue, or dead-lettered.
    Error,
}

impl SendStatus {
    pub const ALL: [SendStatus; 4] = [
        SendStatus::Pending,
        SendStatus::Queued,
        SendStatus::Sent,
        SendStatus::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SendStatus::Pending => "PENDING",
            SendStatus::Queued => "QUEUED",
            SendStatus::Sent => "SENT",
            SendStatus::Error => "ERROR",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, SendStatus::Sent | SendStatus::Error)
    }
}

named_enum!(SendStatus, "status");

/// The steps of handling one message, timed separately so a slowdown can be
/// placed: claiming it in the status table, loading stored content, the
/// provider's send call, and recording SENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Claim,
    Content,
    Send,
    Record,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Claim, Stage::Content, Stage::Send, Stage::Record];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Claim => "claim",
            Stage::Content => "content",
            Stage::Send => "send",
            Stage::Record => "record",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

named_enum!(Stage, "stage");

/// Which provider sends the mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MailerKind {
    /// SES API v2 (`SendEmail`).
    Sesv2,
    /// SES API v1 (`SendEmail` / `SendRawEmail`).
    Ses,
    /// Any SMTP relay, through lettre.
    Smtp,
    /// Sends nothing; every message succeeds with a made-up id.
    DryRun,
}

impl MailerKind {
    pub const ALL: [MailerKind; 4] = [MailerKind::Sesv2, MailerKind::Ses, MailerKind::Smtp, MailerKind::DryRun];

    pub fn as_str(self) -> &'static str {
        match self {
            MailerKind::Sesv2 => "sesv2",
            MailerKind::Ses => "ses",
            MailerKind::Smtp => "smtp",
            MailerKind::DryRun => "dry-run",
        }
    }

    /// Whether the local stack keeps a record of what this mailer sent.
    pub fn leaves_a_record(self) -> bool {
        !matches!(self, MailerKind::DryRun)
    }
}

named_enum!(MailerKind, "mailer");

/// Which emulator serves DynamoDB on the local stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DynamoDbEmulator {
    /// dynoxide: Rust over SQLite, a few MB of memory, starts in milliseconds (the default).
    #[default]
    Dynoxide,
    /// AWS's own DynamoDB Local (Java): the reference for fidelity, heavier on CPU.
    DynamoDbLocal,
}

impl DynamoDbEmulator {
    pub const ALL: [DynamoDbEmulator; 2] = [DynamoDbEmulator::Dynoxide, DynamoDbEmulator::DynamoDbLocal];

    pub fn as_str(self) -> &'static str {
        match self {
            DynamoDbEmulator::Dynoxide => "dynoxide",
            DynamoDbEmulator::DynamoDbLocal => "dynamodb-local",
        }
    }
}

named_enum!(DynamoDbEmulator, "DynamoDB emulator");

/// Which emulator serves SES v2 on the local stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SesV2Emulator {
    /// aws-ses-v2-local (Node.js): accepts mail for half moto's CPU (the default).
    #[default]
    SesV2Local,
    /// moto (Python): the wider model of SES, twice the CPU per message.
    Moto,
}

impl SesV2Emulator {
    pub const ALL: [SesV2Emulator; 2] = [SesV2Emulator::SesV2Local, SesV2Emulator::Moto];

    pub fn as_str(self) -> &'static str {
        match self {
            SesV2Emulator::SesV2Local => "ses-v2-local",
            SesV2Emulator::Moto => "moto",
        }
    }
}

named_enum!(SesV2Emulator, "SES v2 emulator");

/// A run's, or one SLO's, outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Pass,
    Fail,
}

impl Verdict {
    pub const ALL: [Verdict; 2] = [Verdict::Pass, Verdict::Fail];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
        }
    }

    /// Pass when every check passed.
    pub fn of_all(checks: impl IntoIterator<Item = bool>) -> Self {
        if checks.into_iter().all(|ok| ok) {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }

    pub fn passed(self) -> bool {
        self == Verdict::Pass
    }
}

named_enum!(Verdict, "verdict");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_from_its_spelling() {
        for kind in MessageKind::ALL {
            assert_eq!(kind.as_str().parse::<MessageKind>(), Ok(kind));
        }
        for status in SendStatus::ALL {
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("\"{status}\""));
            assert_eq!(status.as_str().to_lowercase().parse::<SendStatus>(), Ok(status));
        }
        for stage in Stage::ALL {
            assert_eq!(stage.as_str().parse::<Stage>(), Ok(stage));
        }
        assert_eq!("dry-run".parse::<MailerKind>(), Ok(MailerKind::DryRun));
        for emulator in SesV2Emulator::ALL {
            assert_eq!(emulator.as_str().parse::<SesV2Emulator>(), Ok(emulator));
        }
    }

    #[test]
    fn a_mailer_typo_is_an_error_that_names_the_choices() {
        let error = "sesv3".parse::<MailerKind>().unwrap_err();
        assert_eq!(error.to_string(), "`sesv3` is not a mailer (sesv2, ses, smtp, dry-run)");
    }

    #[test]
    fn a_verdict_passes_only_when_every_check_does() {
        assert_eq!(Verdict::of_all([true, true]), Verdict::Pass);
        assert_eq!(Verdict::of_all([true, false]), Verdict::Fail);
        assert_eq!(Verdict::of_all([]), Verdict::Pass);
    }
}

use std::fmt;

/// A recipient address that passed Courier's checks: syntax, a local part of
/// at most 64 bytes and a whole of at most 254 (RFC 5321's limits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("is empty")]
    Empty,
    #[error("has no '@'")]
    MissingAt,
    #[error("is {0} characters long; at most 254 are allowed")]
    TooLong(usize),
    #[error("has a local part of {0} characters; at most 64 are allowed")]
    LocalPartTooLong(usize),
    #[error("has an invalid local part")]
    InvalidLocalPart,
    #[error("has an invalid domain")]
    InvalidDomain,
}

const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-.";

impl EmailAddress {
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if text.len() > 254 {
            return Err(AddressError::TooLong(text.len()));
        }
        let (local, domain) = text.rsplit_once('@').ok_or(AddressError::MissingAt)?;
        if local.len() > 64 {
            return Err(AddressError::LocalPartTooLong(local.len()));
        }
        let local_ok = !local.is_empty()
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c));
        if !local_ok {
            return Err(AddressError::InvalidLocalPart);
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let tld = domain.rsplit('.').next().unwrap_or_default();
        let domain_ok =
            domain.contains('.') && domain.split('.').all(label_ok) && tld.bytes().any(|b| b.is_ascii_alphabetic());
        if !domain_ok {
            return Err(AddressError::InvalidDomain);
        }
        let mut address = String::with_capacity(text.len());
        address.push_str(local);
        address.push('@');
        address.extend(domain.chars().map(|c| c.to_ascii_lowercase()));
        Ok(Self(address))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key under which two spellings of one mailbox count as the same recipient.
    pub fn dedup_key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Read back (from a queue message) only if it still passes the checks.
impl TryFrom<String> for EmailAddress {
    type Error = AddressError;
    fn try_from(text: String) -> Result<Self, AddressError> {
        Self::parse(&text)
    }
}

impl From<EmailAddress> for String {
    fn from(address: EmailAddress) -> String {
        address.0
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_addresses_are_accepted_and_the_domain_is_lowercased() {
        let address = EmailAddress::parse(" Ann.Lee+news@Example.COM ").unwrap();
        assert_eq!(address.as_str(), "Ann.Lee+news@example.com");
        assert_eq!(address.dedup_key(), "ann.lee+news@example.com");
    }

    #[test]
    fn malformed_addresses_are_rejected_with_the_reason() {
        assert_eq!(EmailAddress::parse(""), Err(AddressError::Empty));
        assert_eq!(EmailAddress::parse("no-at.example.com"), Err(AddressError::MissingAt));
        assert_eq!(
            EmailAddress::parse("a..b@example.com"),
            Err(AddressError::InvalidLocalPart)
        );
        assert_eq!(
            EmailAddress::parse(".a@example.com"),
            Err(AddressError::InvalidLocalPart)
        );
        assert_eq!(
            EmailAddress::parse("a b@example.com"),
            Err(AddressError::InvalidLocalPart)
        );
        assert_eq!(EmailAddress::parse("a@localhost"), Err(AddressError::InvalidDomain));
        assert_eq!(EmailAddress::parse("a@-x.com"), Err(AddressError::InvalidDomain));
        assert_eq!(EmailAddress::parse("a@x..com"), Err(AddressError::InvalidDomain));
        assert_eq!(EmailAddress::parse("a@1.2.3.4"), Err(AddressError::InvalidDomain));
    }

    #[test]
    fn length_limits_are_those_of_rfc_5321() {
        let local_64 = "a".repeat(64);
        assert!(EmailAddress::parse(&format!("{local_64}@example.com")).is_ok());
        let local_65 = "a".repeat(65);
        assert_eq!(
            EmailAddress::parse(&format!("{local_65}@example.com")),
            Err(AddressError::LocalPartTooLong(65))
        );
        let domain = format!("{}.{}.{}.com", "b".repeat(63), "c".repeat(63), "d".repeat(60));
        let whole = format!("{local_64}@{domain}");
        assert!(whole.len() > 254);
        assert_eq!(EmailAddress::parse(&whole), Err(AddressError::TooLong(whole.len())));
    }
}

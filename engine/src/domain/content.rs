//! The rules every subject and body obeys, whichever door it came in by (a
//! CSV row or a JSON notification): one definition, so the two entry points
//! cannot drift apart.
//!
//! The rules exist for what comes after: a subject is a mail header (no line
//! breaks, RFC 5322's 998-character line), and both travel through SQS, which
//! refuses characters outside XML's set (U+FFFE, U+FFFF, most C0 controls),
//! and through JSON, where a control character costs six bytes (`\u0001`).
//! Refusing them here keeps every byte counted at the edge true to the end.

/// A subject longer than this is refused (RFC 5322's line limit; clients show far less).
pub const MAX_SUBJECT_CHARS: usize = 998;

/// How much of an offending value an error message quotes back.
pub const MAX_QUOTED_CHARS: usize = 64;

/// Checks a subject (already trimmed): present, one line, no control
/// characters, nothing SQS cannot carry, at most [`MAX_SUBJECT_CHARS`].
pub fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("is empty".into());
    }
    // Counting characters only matters once the bytes could exceed the limit.
    if subject.len() > MAX_SUBJECT_CHARS && subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(format!(
            "is {} characters long; at most {MAX_SUBJECT_CHARS} are allowed",
            subject.chars().count()
        ));
    }
    if subject.contains(['\r', '\n']) {
        return Err("contains a line break".into());
    }
    check_characters(subject, |_| false)
}

/// Checks a body: not blank, and free of control characters other than tab,
/// CR and LF, and of what SQS cannot carry.
pub fn check_body(body: &str) -> Result<(), String> {
    if body.trim().is_empty() {
        return Err("is empty".into());
    }
    check_characters(body, |c| matches!(c, '\t' | '\r' | '\n'))
}

/// The first character that is a control character (unless `allowed`) or
/// one of the two noncharacters SQS refuses, named with its position.
fn check_characters(text: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    // Fast path: plain ASCII text without control bytes needs no char walk.
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || (b < 0x80 && allowed(b as char)))
    {
        return Ok(());
    }
    for (position, c) in text.chars().enumerate() {
        let refused = (c.is_control() && !allowed(c)) || matches!(c, '\u{FFFE}' | '\u{FFFF}');
        if refused {
            let what = if c.is_control() {
                "the control character"
            } else {
                "the noncharacter"
            };
            return Err(format!(
                "contains {what} U+{:04X} at character {}",
                c as u32,
                position + 1
            ));
        }
    }
    Ok(())
}

/// A value to quote back in an error: at most [`MAX_QUOTED_CHARS`]
/// characters, with control characters shown escaped, so a 10 MB field
/// does not come back whole and a hostile one cannot forge log lines.
pub fn quoted(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(MAX_QUOTED_CHARS)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if value.chars().nth(MAX_QUOTED_CHARS).is_some() {
        out.push_str(&format!("… ({} bytes)", value.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_subject_and_body_pass() {
        assert_eq!(check_subject("Your invoice, Müller"), Ok(()));
        assert_eq!(check_body("Hello\r\n\tSee you at 9. ✓"), Ok(()));
    }

    #[test]
    fn subjects_are_one_bounded_line_of_printable_text() {
        assert_eq!(check_subject(""), Err("is empty".into()));
        assert_eq!(check_subject("a\nb"), Err("contains a line break".into()));
        assert!(check_subject(&"é".repeat(998)).is_ok(), "998 two-byte characters fit");
        assert!(check_subject(&"é".repeat(999)).unwrap_err().contains("999 characters"));
        assert!(check_subject("a\u{0}b").unwrap_err().contains("U+0000 at character 2"));
        assert!(check_subject("tab\there").unwrap_err().contains("U+0009"));
    }

    #[test]
    fn bodies_keep_tabs_and_line_breaks_but_no_other_controls_or_what_sqs_refuses() {
        assert_eq!(check_body("   \n "), Err("is empty".into()));
        assert!(check_body("x\u{1}").unwrap_err().contains("control character U+0001"));
        assert!(check_body("x\u{7f}").unwrap_err().contains("U+007F"));
        assert!(check_body("x\u{FFFF}").unwrap_err().contains("noncharacter U+FFFF"));
        assert!(check_subject("x\u{FFFE}").unwrap_err().contains("U+FFFE"));
        assert_eq!(check_body("emoji 😀 and U+FFFD \u{FFFD}"), Ok(()));
    }

    #[test]
    fn quoted_values_are_short_and_show_controls_escaped() {
        assert_eq!(quoted("abc"), "abc");
        let long = "x".repeat(10_000);
        let shown = quoted(&long);
        assert!(shown.starts_with(&"x".repeat(64)) && shown.ends_with("… (10000 bytes)"));
        assert_eq!(quoted("a\nb"), "a\\nb");
    }
}

//! Property-based fuzzing of the parsers that read what clients send: the
//! CSV upload parser, the notification JSON, and the SQS message decoder
//! (the scenario TOML has its own in `scenarios/tests/fuzz.rs`).
//!
//! A short run is part of `cargo test`; a longer one (see the README) is
//! `PROPTEST_CASES=200000 cargo test --release -p engine --test fuzz`.
//! Every property's first promise is "no panic"; the CSV ones also check
//! that no row can swallow another (what an unterminated quote once did).

use engine::api::{notification_message, NotificationRequest};
use engine::csv_upload::{parse_all, CsvFileError};
use engine::domain::OutboundMessage;
use proptest::prelude::*;

/// Bytes that look enough like CSV to reach deep into the parser.
fn csvish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"email,subject,body\n".to_vec()),
        Just(b"a@example.com".to_vec()),
        Just(b",".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\"\"".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\xff".to_vec()),
        Just("ü\u{FFFF}\u{1}".as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// A field as a spreadsheet might hold it: commas, quotes, line breaks, Unicode.
fn field() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9 ,\"\n\r@.äöü😀-]{0,12}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_csv_parser_never_panics_on_any_bytes_in_any_chunking(bytes in csvish(), chunk in 1usize..64) {
        let _ = parse_all(&bytes, chunk);
    }

    #[test]
    fn the_verdict_does_not_depend_on_how_the_bytes_were_chunked(bytes in csvish(), chunk in 1usize..16) {
        let whole = parse_all(&bytes, bytes.len().max(1));
        let pieces = parse_all(&bytes, chunk);
        prop_assert_eq!(format!("{whole:?}"), format!("{pieces:?}"));
    }

    #[test]
    fn every_row_written_as_csv_is_counted_once_and_none_swallows_another(
        rows in proptest::collection::vec((field(), field(), field()), 1..30)
    ) {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(["email", "subject", "body"]).unwrap();
        let mut written = 0u64;
        for (i, (local, subject, body)) in rows.iter().enumerate() {
            // A row whose fields are all empty is a blank line, which is skipped.
            let email = format!("{}{i}@example.com", local.chars().filter(char::is_ascii_alphanumeric).collect::<String>());
            writer.write_record([email.as_str(), subject, body]).unwrap();
            written += 1;
        }
        let bytes = writer.into_inner().unwrap();
        let parsed = parse_all(&bytes, 7).expect("well-formed CSV is usable");
        let counted = (parsed.accepted.len() + parsed.rejected.len() + parsed.duplicates.len()) as u64;
        prop_assert_eq!(counted, written);
        for row in &parsed.accepted {
            let (_, subject, body) = &rows[(row.row - 2) as usize];
            prop_assert_eq!(&row.subject, subject.trim());
            prop_assert_eq!(&row.body, body);
        }
    }

    #[test]
    fn a_quote_left_open_is_always_refused_never_accepted(
        rows in proptest::collection::vec((field(), field()), 1..10), at in 0usize..10
    ) {
        let mut text = String::from("email,subject,body\n");
        let at = at % rows.len();
        for (i, (subject, body)) in rows.iter().enumerate() {
            let clean = |s: &str| s.replace(['"', '\n', '\r', ','], "");
            if i == at {
                text.push_str(&format!("r{i}@example.com,{},\"{}\n", clean(subject), clean(body)));
            } else {
                text.push_str(&format!("r{i}@example.com,{},{}\n", clean(subject), clean(body)));
            }
        }
        let refused = parse_all(text.as_bytes(), 5);
        let expected = CsvFileError::UnterminatedQuote { row: at as u64 + 2, field: "body".into() };
        prop_assert_eq!(refused, Err(expected));
    }

    #[test]
    fn the_notification_json_never_panics(text in "\\PC{0,200}") {
        if let Ok(request) = serde_json::from_str::<NotificationRequest>(&text) {
            let _ = notification_message(request);
        }
    }

    #[test]
    fn any_notification_fields_get_a_verdict_without_panicking(
        kind in "(reminder|offer|subscription|campaign|\\PC{0,8})",
        recipient in "\\PC{0,40}",
        subject in proptest::option::of("\\PC{0,40}"),
        body in proptest::option::of("\\PC{0,40}"),
    ) {
        let request = serde_json::json!({ "type": kind, "recipient": recipient, "subject": subject, "body": body });
        let request: NotificationRequest = serde_json::from_value(request).unwrap();
        let _ = notification_message(request);
    }

    #[test]
    fn the_sqs_message_decoder_never_panics(text in "\\PC{0,300}") {
        let _ = OutboundMessage::decode(&text);
    }

    #[test]
    fn the_decoder_survives_mutations_of_a_real_message(cut in 0usize..400, insert in "\\PC{0,5}") {
        let real = r#"{"v":1,"sendId":"5b6f3a2e-8d7c-4b1a-9f0e-1c2d3e4f5a6b","batchId":null,"kind":"offer","priority":"medium","recipient":"a@example.com","subject":"S","body":{"where":"inline","text":"b"},"attachment":null,"acceptedAt":"2026-11-24T10:00:00Z"}"#;
        prop_assert!(OutboundMessage::decode(real).is_ok());
        let at = real.char_indices().map(|(i, _)| i).nth(cut % real.len()).unwrap_or(0);
        let mutated = format!("{}{insert}{}", &real[..at], &real[at..]);
        let _ = OutboundMessage::decode(&mutated);
    }
}

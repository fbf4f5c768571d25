//! Streaming parse and validation of uploaded campaign CSV files.
//!
//! Bytes are pushed in as they arrive ([`CsvUploadParser::feed`]), so a large
//! upload is validated while it streams and nothing needs the whole file at
//! once. Row numbers are those a spreadsheet shows: the header is row 1.
//! A bad row is rejected with its number, field and reason; every other row
//! still counts. Only a file whose header is unusable is refused whole.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::BuildHasher;

use crate::domain::content::{check_body, check_subject, quoted};
use crate::domain::{EmailAddress, MessageKind, Priority};

/// A row that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedRow {
    pub row: u64,
    pub recipient: EmailAddress,
    pub subject: String,
    pub body: String,
    pub kind: Option<MessageKind>,
    pub priority: Option<Priority>,
    /// The file name of an attachment uploaded beside the CSV.
    pub attachment: Option<String>,
}

/// A row that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedRow {
    pub row: u64,
    /// The column at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub reason: String,
}

/// `row N, field `F`: reason` (the field left out when there is none).
impl std::fmt::Display for RejectedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row {}", self.row)?;
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// A row skipped because its recipient already appeared earlier in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateRow {
    pub row: u64,
    pub duplicate_of_row: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParsedUpload {
    pub accepted: Vec<AcceptedRow>,
    pub duplicates: Vec<DuplicateRow>,
    pub rejected: Vec<RejectedRow>,
}

/// The file as a whole cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvFileError {
    #[error("the file is empty: it needs a header row with the columns email, subject, body")]
    Empty,
    #[error("the header row lacks the column(s) {missing:?}; it has {found:?}")]
    MissingColumns { missing: Vec<String>, found: Vec<String> },
    #[error("the header row names the column `{0}` twice")]
    DuplicateColumn(String),
    #[error("the header row is not valid UTF-8")]
    HeaderNotUtf8,
    #[error("the header row has more than {max} columns")]
    TooManyColumns { max: usize },
    #[error("row {row}, field `{field}`: a quoted field opens here and is never closed (the file ends inside it); close the quote or escape it as \"\"")]
    UnterminatedQuote { row: u64, field: String },
    #[error("more than {max} rows were rejected, so the file is refused whole; the first: {first}")]
    TooManyRejected { max: usize, first: String },
}

/// The bounds an upload is held to (the field rules live in `domain::content`).
#[derive(Debug, Clone, Copy)]
pub struct CsvLimits {
    /// A header with more columns refuses the file; a row with more fields is rejected.
    pub max_columns: usize,
    /// More rejected rows than this refuse the file whole: it is not the file
    /// its owner meant to send, and the verdicts must stay bounded.
    pub max_rejected_rows: usize,
}

impl Default for CsvLimits {
    fn default() -> Self {
        Self {
            max_columns: 64,
            max_rejected_rows: 100_000,
        }
    }
}

/// The longest value an optional column (type, priority, attachment) may hold.
const MAX_SHORT_FIELD_BYTES: usize = 255;

#[derive(Debug, Clone, Copy)]
struct Columns {
    email: usize,
    subject: usize,
    body: usize,
    kind: Option<usize>,
    priority: Option<usize>,
    attachment: Option<usize>,
    count: usize,
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A push parser: feed it chunks, then `finish`.
pub struct CsvUploadParser {
    reader: csv_core::Reader,
    limits: CsvLimits,
    /// Bytes held back until we know whether the file starts with a BOM.
    head: Vec<u8>,
    bom_checked: bool,
    field_bytes: Vec<u8>,
    field_ends: Vec<usize>,
    field_len: usize,
    ends_len: usize,
    /// The spreadsheet row of the record being read (header = 1).
    row: u64,
    columns: Option<Columns>,
    /// The header's names, lowercased, to name a column in an error.
    header_names: Vec<String>,
    header_error: Option<CsvFileError>,
    /// Fields of the current record beyond what the buffers keep (a row far
    /// wider than any header allows is counted, not stored).
    dropped_fields: usize,
    /// Accepted recipients by a hash of their lowercased address (seeded per
    /// parser): the index of their first row in `firsts`. Addresses are kept
    /// end to end in one buffer (`first_addresses`), not one allocation each,
    /// so a million-row file is checked exactly in tens of MiB, and accepted
    /// rows can be taken away as they are parsed. `colliding` holds the rare
    /// address whose hash another already took.
    first_row_of: HashMap<u64, usize, foldhash::fast::RandomState>,
    /// (row, start, end) of each first occurrence in `first_addresses`.
    firsts: Vec<(u64, usize, usize)>,
    first_addresses: Vec<u8>,
    recipient_hasher: foldhash::fast::RandomState,
    colliding: HashMap<String, u64>,
    /// All ones; tests narrow it to make every address collide.
    hash_mask: u64,
    parsed: ParsedUpload,
}

impl CsvUploadParser {
    pub fn new(limits: CsvLimits) -> Self {
        Self {
            reader: csv_core::ReaderBuilder::new().build(),
            limits,
            head: Vec::new(),
            bom_checked: false,
            field_bytes: vec![0; 4096],
            field_ends: vec![0; 16],
            field_len: 0,
            ends_len: 0,
            row: 0,
            columns: None,
            header_names: Vec::new(),
            header_error: None,
            dropped_fields: 0,
            first_row_of: HashMap::default(),
            firsts: Vec::new(),
            first_addresses: Vec::new(),
            recipient_hasher: foldhash::fast::RandomState::default(),
            colliding: HashMap::new(),
            hash_mask: u64::MAX,
            parsed: ParsedUpload::default(),
        }
    }

    /// Parses as much of `chunk` as forms complete records.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), CsvFileError> {
        if !self.bom_checked {
            self.head.extend_from_slice(chunk);
            // csv-core strips a BOM of its own from its first input when that
            // input holds at least 3 bytes: a second BOM right after ours would
            // be stripped or kept depending on how the bytes were chunked.
            // Holding a BOM-led head until 6 bytes (or the end) makes csv-core's
            // first input the same however the upload arrives.
            let led_by_bom = UTF8_BOM.starts_with(&self.head[..self.head.len().min(UTF8_BOM.len())]);
            if led_by_bom && self.head.len() < 2 * UTF8_BOM.len() {
                return Ok(());
            }
            self.bom_checked = true;
            let head = std::mem::take(&mut self.head);
            let start = if head.starts_with(UTF8_BOM) { UTF8_BOM.len() } else { 0 };
            return self.push(&head[start..]);
        }
        self.push(chunk)
    }

    /// Ends the input and returns every row's verdict.
    pub fn finish(mut self) -> Result<ParsedUpload, CsvFileError> {
        if !self.bom_checked {
            self.bom_checked = true;
            let head = std::mem::take(&mut self.head);
            self.push(&head)?;
        }
        // A line break ends an open unquoted record, is skipped between
        // records, and is data only inside quotes: if a record is still open
        // after it, the file ended inside a quoted field. csv-core would close
        // it quietly and hand back one row holding the rest of the file,
        // other people's rows included.
        self.push(b"\n")?;
        if self.field_len > 0 || self.ends_len > 0 {
            let field = match self.columns {
                Some(_) => self.header_names.get(self.ends_len).cloned().unwrap_or_default(),
                None => format!("column {}", self.ends_len + 1),
            };
            return Err(CsvFileError::UnterminatedQuote {
                row: self.row + 1,
                field,
            });
        }
        self.push(&[])?;
        if self.columns.is_none() {
            return Err(CsvFileError::Empty);
        }
        Ok(self.parsed)
    }

    /// Takes the rows accepted since the last call, so a caller streaming a
    /// large file handles them as they come and memory stays bounded.
    pub fn take_accepted(&mut self) -> Vec<AcceptedRow> {
        std::mem::take(&mut self.parsed.accepted)
    }

    fn push(&mut self, mut input: &[u8]) -> Result<(), CsvFileError> {
        let at_end = input.is_empty();
        loop {
            let (result, read, written, ends) = self.reader.read_record(
                input,
                &mut self.field_bytes[self.field_len..],
                &mut self.field_ends[self.ends_len..],
            );
            input = &input[read..];
            // csv-core keeps field ends relative to the record's start across calls.
            self.field_len += written;
            self.ends_len += ends;
            match result {
                csv_core::ReadRecordResult::InputEmpty => {
                    if at_end {
                        continue;
                    }
                    return Ok(());
                }
                csv_core::ReadRecordResult::OutputFull => {
                    let grown = self.field_bytes.len() * 2;
                    self.field_bytes.resize(grown, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    if self.field_ends.len() > self.limits.max_columns {
                        // Wider than any header may be: count the fields, keep none.
                        self.dropped_fields += self.ends_len;
                        self.ends_len = 0;
                    } else {
                        let grown = self.field_ends.len() * 2;
                        self.field_ends.resize(grown, 0);
                    }
                }
                csv_core::ReadRecordResult::Record => {
                    self.row += 1;
                    self.on_record()?;
                    self.field_len = 0;
                    self.ends_len = 0;
                    self.dropped_fields = 0;
                }
                csv_core::ReadRecordResult::End => return Ok(()),
            }
        }
    }

    fn field(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.field_ends[index - 1] };
        &self.field_bytes[start..self.field_ends[index]]
    }

    fn on_record(&mut self) -> Result<(), CsvFileError> {
        if let Some(error) = &self.header_error {
            return Err(error.clone());
        }
        match self.columns {
            None => {
                let columns = self.read_header();
                match columns {
                    Ok(columns) => {
                        self.columns = Some(columns);
                        Ok(())
                    }
                    Err(error) => {
                        self.header_error = Some(error.clone());
                        Err(error)
                    }
                }
            }
            Some(columns) => {
                self.on_data_row(columns);
                self.check_rejected_count()
            }
        }
    }

    fn read_header(&mut self) -> Result<Columns, CsvFileError> {
        let max = self.limits.max_columns;
        if self.dropped_fields > 0 || self.ends_len > max {
            return Err(CsvFileError::TooManyColumns { max });
        }
        let mut names = Vec::with_capacity(self.ends_len);
        let mut seen = std::collections::HashSet::with_capacity(self.ends_len);
        for i in 0..self.ends_len {
            let name = std::str::from_utf8(self.field(i)).map_err(|_| CsvFileError::HeaderNotUtf8)?;
            let name = name.trim().to_ascii_lowercase();
            if !name.is_empty() && !seen.insert(name.clone()) {
                return Err(CsvFileError::DuplicateColumn(quoted(&name)));
            }
            names.push(name);
        }
        self.header_names = names.clone();
        let find = |wanted: &[&str]| names.iter().position(|n| wanted.contains(&n.as_str()));
        let required = [
            ("email", find(&["email"])),
            ("subject", find(&["subject"])),
            ("body", find(&["body"])),
        ];
        let missing: Vec<String> = required
            .iter()
            .filter(|(_, at)| at.is_none())
            .map(|(name, _)| name.to_string())
            .collect();
        if !missing.is_empty() {
            let found = names.iter().map(|n| quoted(n)).collect();
            return Err(CsvFileError::MissingColumns { missing, found });
        }
        Ok(Columns {
            email: required[0].1.unwrap_or_default(),
            subject: required[1].1.unwrap_or_default(),
            body: required[2].1.unwrap_or_default(),
            kind: find(&["type", "kind"]),
            priority: find(&["priority"]),
            attachment: find(&["attachment"]),
            count: names.len(),
        })
    }

    fn check_rejected_count(&self) -> Result<(), CsvFileError> {
        let max = self.limits.max_rejected_rows;
        if self.parsed.rejected.len() <= max {
            return Ok(());
        }
        Err(CsvFileError::TooManyRejected {
            max,
            first: self.parsed.rejected[0].to_string(),
        })
    }

    fn reject(&mut self, field: Option<&'static str>, reason: String) {
        self.parsed.rejected.push(RejectedRow {
            row: self.row,
            field: field.map(str::to_string),
            reason,
        });
    }

    fn on_data_row(&mut self, columns: Columns) {
        // A blank line reads as one empty field: skip it rather than reject it.
        if self.ends_len == 1 && self.field_ends[0] == 0 {
            return;
        }
        let fields = self.ends_len + self.dropped_fields;
        if fields != columns.count {
            let reason = format!("has {fields} fields; the header has {}", columns.count);
            return self.reject(None, reason);
        }
        let row = match self.validate_row(columns) {
            Ok(row) => row,
            Err((field, reason)) => return self.reject(field, reason),
        };
        match self.first_accepted_with(&row.recipient) {
            Some(first) => self.parsed.duplicates.push(DuplicateRow {
                row: self.row,
                duplicate_of_row: first,
            }),
            None => self.parsed.accepted.push(row),
        }
    }

    /// The row that first had `recipient` (case-insensitively), or `None`
    /// after noting that the row about to be accepted now has it.
    fn first_accepted_with(&mut self, recipient: &EmailAddress) -> Option<u64> {
        let address = recipient.as_str();
        let mut lowered = [0u8; 256];
        let lowered = &mut lowered[..address.len()];
        lowered.copy_from_slice(address.as_bytes());
        lowered.make_ascii_lowercase();
        let hash = self.recipient_hasher.hash_one(&*lowered) & self.hash_mask;
        match self.first_row_of.entry(hash) {
            Entry::Vacant(slot) => {
                let start = self.first_addresses.len();
                self.first_addresses.extend_from_slice(lowered);
                self.firsts.push((self.row, start, self.first_addresses.len()));
                slot.insert(self.firsts.len() - 1);
                None
            }
            Entry::Occupied(taken) => {
                let (row, start, end) = self.firsts[*taken.get()];
                if self.first_addresses[start..end] == *lowered {
                    return Some(row);
                }
                match self.colliding.entry(recipient.dedup_key()) {
                    Entry::Occupied(first) => Some(*first.get()),
                    Entry::Vacant(slot) => {
                        slot.insert(self.row);
                        None
                    }
                }
            }
        }
    }

    /// Checks the current record's fields, borrowing them; only an accepted
    /// row's values are copied out.
    fn validate_row(&self, columns: Columns) -> Result<AcceptedRow, (Option<&'static str>, String)> {
        let text = |index: usize, name: &'static str| {
            std::str::from_utf8(self.field(index))
                .map_err(|e| (Some(name), format!("is not valid UTF-8 (byte {})", e.valid_up_to())))
        };
        let optional = |index: Option<usize>, name: &'static str| match index {
            None => Ok(None),
            Some(i) => match text(i, name)?.trim() {
                "" => Ok(None),
                long if long.len() > MAX_SHORT_FIELD_BYTES => Err((
                    Some(name),
                    format!(
                        "is {} bytes long; at most {MAX_SHORT_FIELD_BYTES} are allowed",
                        long.len()
                    ),
                )),
                value => Ok(Some(value)),
            },
        };
        let email = text(columns.email, "email")?;
        let subject = text(columns.subject, "subject")?.trim();
        let body = text(columns.body, "body")?;
        let kind = optional(columns.kind, "type")?;
        let priority = optional(columns.priority, "priority")?;
        let attachment = optional(columns.attachment, "attachment")?;
        let recipient = EmailAddress::parse(email)
            .map_err(|error| (Some("email"), format!("`{}` {error}", quoted(email.trim()))))?;
        check_subject(subject).map_err(|reason| (Some("subject"), reason))?;
        check_body(body).map_err(|reason| (Some("body"), reason))?;
        let kind = kind
            .map(str::parse::<MessageKind>)
            .transpose()
            .map_err(|reason| (Some("type"), reason.to_string()))?;
        let priority = priority
            .map(str::parse::<Priority>)
            .transpose()
            .map_err(|reason| (Some("priority"), reason.to_string()))?;
        Ok(AcceptedRow {
            row: self.row,
            recipient,
            subject: subject.to_string(),
            body: body.to_string(),
            kind,
            priority,
            attachment: attachment.map(str::to_string),
        })
    }
}

/// Makes a value safe to write into a CSV cell that a spreadsheet will open:
/// a leading `= + - @`, tab or CR would otherwise start a formula (CSV injection).
pub fn neutralise_cell(value: &str) -> std::borrow::Cow<'_, str> {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => std::borrow::Cow::Owned(format!("'{value}")),
        _ => std::borrow::Cow::Borrowed(value),
    }
}

/// Writes rejected rows as CSV (row, field, reason), every cell neutralised.
pub fn rejected_rows_csv(rows: &[RejectedRow]) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let write = |writer: &mut csv::Writer<Vec<u8>>, cells: [&str; 3]| {
        let cells = cells.map(neutralise_cell);
        writer
            .write_record(cells.iter().map(|c| c.as_ref()))
            .expect("writing to memory");
    };
    write(&mut writer, ["row", "field", "reason"]);
    for row in rows {
        write(
            &mut writer,
            [&row.row.to_string(), row.field.as_deref().unwrap_or(""), &row.reason],
        );
    }
    let bytes = writer.into_inner().expect("flushing to memory");
    String::from_utf8(bytes).expect("CSV of UTF-8 cells is UTF-8")
}

/// Parses a whole file at once (tests and benches); uploads use `feed`.
pub fn parse_all(bytes: &[u8], chunk_size: usize) -> Result<ParsedUpload, CsvFileError> {
    let mut parser = CsvUploadParser::new(CsvLimits::default());
    for chunk in bytes.chunks(chunk_size.max(1)) {
        parser.feed(chunk)?;
    }
    parser.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_exactly_even_when_every_address_hashes_alike() {
        let csv = b"email,subject,body\na@x.com,S,B\nb@x.com,S,B\nA@X.com,S,B\nc@x.com,S,B\nB@x.com,S,B\n";
        let mut parser = CsvUploadParser::new(CsvLimits::default());
        parser.hash_mask = 0;
        parser.feed(csv).unwrap();
        let parsed = parser.finish().unwrap();
        let accepted: Vec<&str> = parsed.accepted.iter().map(|r| r.recipient.as_str()).collect();
        assert_eq!(accepted, ["a@x.com", "b@x.com", "c@x.com"]);
        let duplicates: Vec<(u64, u64)> = parsed.duplicates.iter().map(|d| (d.row, d.duplicate_of_row)).collect();
        assert_eq!(duplicates, [(4, 2), (6, 3)]);
    }

    #[test]
    fn duplicates_are_still_found_after_the_accepted_rows_were_taken_away() {
        let mut parser = CsvUploadParser::new(CsvLimits::default());
        parser.hash_mask = 0;
        parser.feed(b"email,subject,body\na@x.com,S,B\nb@x.com,S,B\n").unwrap();
        let first: Vec<u64> = parser.take_accepted().iter().map(|r| r.row).collect();
        parser.feed(b"B@X.com,S,B\nc@x.com,S,B\na@x.com,S,B\n").unwrap();
        let parsed = parser.finish().unwrap();
        assert_eq!(first, [2, 3]);
        assert_eq!(parsed.accepted.iter().map(|r| r.row).collect::<Vec<_>>(), [5]);
        let duplicates: Vec<(u64, u64)> = parsed.duplicates.iter().map(|d| (d.row, d.duplicate_of_row)).collect();
        assert_eq!(duplicates, [(4, 3), (6, 2)]);
    }

    fn parse(text: &str) -> ParsedUpload {
        parse_all(text.as_bytes(), 7).expect("file is usable")
    }

    #[test]
    fn valid_rows_are_accepted_with_spreadsheet_row_numbers() {
        let parsed = parse("email,subject,body\na@example.com,Hi,Hello\nb@example.com,Yo,There\n");
        assert_eq!(parsed.accepted.len(), 2);
        assert_eq!(parsed.accepted[0].row, 2);
        assert_eq!(parsed.accepted[1].recipient.as_str(), "b@example.com");
        assert!(parsed.rejected.is_empty() && parsed.duplicates.is_empty());
    }

    #[test]
    fn bom_crlf_quoted_newlines_and_header_spelling_are_handled() {
        let text = "\u{feff} Email ,SUBJECT, Body \r\n\"a@example.com\",\"Two\",\"line one\r\nline two\"\r\nb@example.com,S,B\r\n";
        for chunk in [1, 2, 3, 5, 64] {
            let parsed = parse_all(text.as_bytes(), chunk).unwrap();
            assert_eq!(parsed.accepted.len(), 2, "chunk size {chunk}");
            assert_eq!(parsed.accepted[0].body, "line one\r\nline two");
            assert_eq!(parsed.accepted[1].row, 3, "a quoted newline does not start a row");
        }
    }

    #[test]
    fn duplicates_are_skipped_and_point_at_the_first_row() {
        let parsed = parse("email,subject,body\na@example.com,1,x\nb@example.com,2,x\nA@EXAMPLE.com,3,x\n");
        assert_eq!(parsed.accepted.len(), 2);
        assert_eq!(
            parsed.duplicates,
            vec![DuplicateRow {
                row: 4,
                duplicate_of_row: 2
            }]
        );
    }

    #[test]
    fn each_bad_row_is_rejected_by_number_and_field_and_the_rest_survive() {
        let mut bytes = b"email,subject,body,priority,type\n".to_vec();
        bytes.extend_from_slice(b"ok@example.com,s,b,,\n"); // row 2
        bytes.extend_from_slice(b"not-an-address,s,b,,\n"); // 3
        bytes.extend_from_slice(b"c@example.com,s,b\n"); // 4: too few fields
        bytes.extend_from_slice(b"d@example.com,s,\xff\xfe,,\n"); // 5: bad UTF-8
        bytes.extend_from_slice(b"e@example.com,s,b,urgent,\n"); // 6
        bytes.extend_from_slice(b"f@example.com,,b,,\n"); // 7
        bytes.extend_from_slice(b"g@example.com,s,b,low,spam\n"); // 8
        bytes.extend_from_slice(b"h@example.com,s,b,high,reminder\n"); // 9
        let parsed = parse_all(&bytes, 4).unwrap();
        let accepted: Vec<u64> = parsed.accepted.iter().map(|r| r.row).collect();
        assert_eq!(accepted, vec![2, 9]);
        assert_eq!(parsed.accepted[1].priority, Some(Priority::High));
        assert_eq!(parsed.accepted[1].kind, Some(MessageKind::Reminder));
        let rejected: Vec<(u64, Option<&str>)> = parsed.rejected.iter().map(|r| (r.row, r.field.as_deref())).collect();
        assert_eq!(
            rejected,
            vec![
                (3, Some("email")),
                (4, None),
                (5, Some("body")),
                (6, Some("priority")),
                (7, Some("subject")),
                (8, Some("type")),
            ]
        );
        assert!(parsed.rejected[1].reason.contains("has 3 fields; the header has 5"));
        assert!(parsed.rejected[2].reason.contains("UTF-8"));
    }

    #[test]
    fn a_header_without_the_required_columns_refuses_the_file() {
        let error = parse_all(b"mail,subject\nx,y\n", 3).unwrap_err();
        assert_eq!(
            error,
            CsvFileError::MissingColumns {
                missing: vec!["email".into(), "body".into()],
                found: vec!["mail".into(), "subject".into()],
            }
        );
        assert_eq!(parse_all(b"", 3).unwrap_err(), CsvFileError::Empty);
        assert_eq!(parse_all(b"\xEF\xBB", 1).unwrap_err(), CsvFileError::HeaderNotUtf8);
        assert!(matches!(
            parse_all(b"email,Email,subject,body\n", 3).unwrap_err(),
            CsvFileError::DuplicateColumn(_)
        ));
    }

    #[test]
    fn blank_lines_and_a_missing_final_newline_are_fine() {
        let parsed = parse("email,subject,body\n\na@example.com,s,b\n\nb@example.com,s,b");
        assert_eq!(parsed.accepted.len(), 2);
        assert!(parsed.rejected.is_empty());
    }

    #[test]
    fn cells_written_back_cannot_start_a_formula() {
        for dangerous in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(neutralise_cell(dangerous).starts_with('\''), "{dangerous:?}");
        }
        assert_eq!(neutralise_cell("plain"), "plain");
        let csv = rejected_rows_csv(&[RejectedRow {
            row: 3,
            field: Some("email".into()),
            reason: "=HYPERLINK(\"x\")".into(),
        }]);
        assert_eq!(csv, "row,field,reason\r\n3,email,\"'=HYPERLINK(\"\"x\"\")\"\r\n");
    }

    #[test]
    fn an_unterminated_quote_refuses_the_file_naming_the_row_and_field_where_it_opened() {
        let text = "email,subject,body\nr1@example.com,S,B1\nr2@example.com,S,\"oops\nr3@example.com,S,B3\nr4@example.com,S,B4\n";
        for chunk in [1, 3, 7, 4096] {
            let error = parse_all(text.as_bytes(), chunk).unwrap_err();
            assert_eq!(
                error,
                CsvFileError::UnterminatedQuote {
                    row: 3,
                    field: "body".into()
                },
                "chunk size {chunk}"
            );
        }
        assert!(matches!(
            parse_all(b"email,\"subject\nbody\n", 5).unwrap_err(),
            CsvFileError::UnterminatedQuote { row: 1, .. }
        ));
    }

    #[test]
    fn closed_quotes_at_the_very_end_are_fine() {
        for text in [
            "email,subject,body\na@example.com,S,\"x\"",
            "email,subject,body\na@example.com,S,\"x\"\n",
            "email,subject,body\na@example.com,S,\"x\"\"y\"\r\n",
            "email,subject,body\na@example.com,S,x",
            "email,subject,body\r\na@example.com,S,x\r",
        ] {
            let parsed = parse_all(text.as_bytes(), 2).unwrap();
            assert_eq!(parsed.accepted.len(), 1, "{text:?}");
        }
    }

    #[test]
    fn a_header_wider_than_the_column_cap_is_refused_in_linear_time() {
        let mut header = (0..100_000).map(|i| format!("c{i}")).collect::<Vec<_>>().join(",");
        header.push('\n');
        let started = tokio::time::Instant::now();
        let error = parse_all(header.as_bytes(), 64 * 1024).unwrap_err();
        assert_eq!(error, CsvFileError::TooManyColumns { max: 64 });
        // Not a timing assertion of the fix: the quadratic check took 30 s here.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_row_far_wider_than_the_header_is_rejected_with_its_true_width() {
        let mut text = String::from("email,subject,body\n");
        text.push_str(&",".repeat(1_000));
        text.push_str("\na@example.com,S,B\n");
        let parsed = parse_all(text.as_bytes(), 100).unwrap();
        assert_eq!(parsed.rejected[0].row, 2);
        assert!(
            parsed.rejected[0].reason.contains("has 1001 fields"),
            "{}",
            parsed.rejected[0].reason
        );
        assert_eq!(parsed.accepted.len(), 1);
    }

    #[test]
    fn a_file_of_mostly_rejected_rows_is_refused_at_the_cap() {
        let mut parser = CsvUploadParser::new(CsvLimits {
            max_rejected_rows: 10,
            ..CsvLimits::default()
        });
        let text = format!("email,subject,body\n{}", ",,\n".repeat(50));
        let error = parser.feed(text.as_bytes()).unwrap_err();
        assert!(
            matches!(error, CsvFileError::TooManyRejected { max: 10, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("row 2, field `email`"), "{error}");
    }

    #[test]
    fn a_huge_bad_address_is_quoted_back_short() {
        let text = format!("email,subject,body\n{},S,B\n", "x".repeat(100_000));
        let parsed = parse_all(text.as_bytes(), 4096).unwrap();
        assert!(
            parsed.rejected[0].reason.len() < 200,
            "{}",
            parsed.rejected[0].reason.len()
        );
    }

    #[test]
    fn control_characters_and_what_sqs_refuses_reject_the_row() {
        let parsed =
            parse("email,subject,body\na@example.com,S\u{1},B\nb@example.com,S,B\u{0}\nc@example.com,S\u{FFFF},B\n");
        let fields: Vec<(u64, Option<&str>)> = parsed.rejected.iter().map(|r| (r.row, r.field.as_deref())).collect();
        assert_eq!(fields, [(2, Some("subject")), (3, Some("body")), (4, Some("subject"))]);
    }
}

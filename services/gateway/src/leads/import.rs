//! Reading a CSV import file into leads, without state or I/O: the import handler runs it, and so
//! do the fuzz target and the corpus replay tests. Good rows are kept whatever the bad ones hold;
//! every refused row says why.

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::model::{LeadStatus, NewLead, ValidLead};
use crate::error::ApiError;

/// Columns, in export order; import accepts any subset in any order (by header name).
pub const HEADER: [&str; 13] = [
    "first_name",
    "last_name",
    "email",
    "phone",
    "company",
    "job_title",
    "source",
    "status",
    "budget",
    "interest",
    "timeline",
    "tags",
    "repeat_customer",
];

/// Columns export adds that are the system's, not the importer's: accepted on import and ignored,
/// so an exported file imports as it is.
pub const EXPORT_ONLY: [&str; 5] = ["id", "owner_id", "score", "tier", "created_at"];

/// Most rows one import takes; larger files are split by the client.
pub const MAX_ROWS: usize = 10_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct RowReport {
    /// 1-based data row (the header is row 0).
    pub row: usize,
    /// `imported` or `rejected`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// An import file read and checked, before anything is written: a report line for every data
/// row, and the rows that are valid with the position of their report line.
#[derive(Debug)]
pub struct ParsedImport {
    pub rows: Vec<RowReport>,
    pub valid: Vec<(usize, ValidLead)>,
}

/// Why a whole import file was refused (bad rows only refuse themselves).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// 400: nothing to import, not even a header row.
    #[error("The CSV is empty: its first row must be a header such as {}.", HEADER.join(","))]
    Empty,
    /// 400: the header row cannot be read.
    #[error("Cannot read the CSV header: {0}.")]
    Header(#[source] ::csv::Error),
    /// 400: the header names columns we do not know.
    #[error("Unknown CSV columns: {}; allowed: {}.", .0.join(", "), HEADER.join(", "))]
    UnknownColumns(Vec<String>),
    /// 413: more than [`MAX_ROWS`] data rows.
    #[error("Imports are limited to {MAX_ROWS} rows.")]
    TooManyRows,
}

impl From<ImportError> for ApiError {
    fn from(err: ImportError) -> Self {
        match err {
            ImportError::TooManyRows => ApiError::Rejected {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                detail: err.to_string(),
            },
            ImportError::Empty | ImportError::Header(_) | ImportError::UnknownColumns(_) => {
                ApiError::BadRequest(err.to_string())
            }
        }
    }
}

/// Reads an import file (UTF-8 CSV with a header row, a byte-order mark allowed) and checks
/// every row without touching the database, so fuzzers and tests run exactly what the import does.
pub fn parse_import(bytes: &[u8]) -> Result<ParsedImport, ImportError> {
    // Spreadsheets save UTF-8 with a byte-order mark, which would otherwise hide the first column.
    let bytes = bytes
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(bytes);
    let mut reader = ::csv::ReaderBuilder::new()
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(bytes);
    let headers = reader.headers().map_err(ImportError::Header)?.clone();
    // An empty upload is a mistake (a wrong file, a failed export), not a successful import of nothing.
    if headers.iter().all(str::is_empty) {
        return Err(ImportError::Empty);
    }
    let unknown: Vec<String> = headers
        .iter()
        .filter(|h| !HEADER.contains(h) && !EXPORT_ONLY.contains(h))
        .map(str::to_owned)
        .collect();
    if !unknown.is_empty() {
        return Err(ImportError::UnknownColumns(unknown));
    }

    let mut rows = Vec::new();
    let mut valid = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let row = index + 1;
        if row > MAX_ROWS {
            return Err(ImportError::TooManyRows);
        }
        // Field checks run even when some cells did not parse, so the report lists every problem.
        let parsed = record
            .map_err(|e| vec![format!("unreadable row: {e}")])
            .and_then(|record| {
                let (lead, mut errors) = parse_row(&headers, &record);
                match lead.validate() {
                    Ok(valid) if errors.is_empty() => Ok(valid),
                    Ok(_) => Err(errors),
                    Err(invalid) => {
                        errors.extend(problems(invalid));
                        Err(errors)
                    }
                }
            });
        match parsed {
            Ok(lead) => {
                valid.push((rows.len(), lead));
                rows.push(RowReport {
                    row,
                    status: "imported",
                    id: None,
                    errors: Vec::new(),
                });
            }
            Err(errors) => rows.push(RowReport {
                row,
                status: "rejected",
                id: None,
                errors,
            }),
        }
    }
    Ok(ParsedImport { rows, valid })
}

fn problems(err: ApiError) -> Vec<String> {
    match err {
        ApiError::Validation(errors) => errors
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect(),
        other => vec![other.to_string()],
    }
}

/// Columns whose values may hold line breaks, as the API allows them.
const FREE_TEXT: [&str; 7] = [
    "first_name",
    "last_name",
    "company",
    "job_title",
    "source",
    "interest",
    "timeline",
];

/// The row as a lead, and what could not be read from it.
fn parse_row(
    headers: &::csv::StringRecord,
    record: &::csv::StringRecord,
) -> (NewLead, Vec<String>) {
    let mut lead = NewLead::default();
    let mut errors = Vec::new();
    // A quote left open runs to the end of the file (or to the next stray quote), so its row
    // comes out short, ending in a field that spans the lines it swallowed.
    if record.len() < headers.len()
        && record
            .iter()
            .next_back()
            .is_some_and(|last| last.contains(['\n', '\r']))
    {
        errors.push(
            "a quote left open in this row swallowed the lines after it; close it and import again"
                .into(),
        );
        return (lead, errors);
    }
    for (name, value) in headers.iter().zip(record.iter()) {
        let value = unguard_formula(value);
        // A quote left open swallows every later line into one field, and the rows it ate would
        // vanish without a word. Free text may span lines (the API stores such values and the
        // export writes them quoted), so only a structured column with a line break is refused.
        if !FREE_TEXT.contains(&name) && value.contains(['\n', '\r']) {
            errors.push(format!(
                "{name}: must be on one line (is a quote left open in this row?)"
            ));
            continue;
        }
        let text = (!value.is_empty()).then(|| value.to_owned());
        match name {
            "first_name" => lead.first_name = text,
            "last_name" => lead.last_name = text,
            "email" => lead.email = text,
            "phone" => lead.phone = text,
            "company" => lead.company = text,
            "job_title" => lead.job_title = text,
            "source" => lead.source = text,
            "interest" => lead.interest = text,
            "timeline" => lead.timeline = text,
            "status" if value.is_empty() => {}
            "status" => match LeadStatus::parse(&value.to_lowercase()) {
                Some(status) => lead.status = Some(status),
                None => errors.push(format!(
                    "status: must be one of {}",
                    LeadStatus::ALL.join(", ")
                )),
            },
            "budget" if value.is_empty() => {}
            "budget" => match value.replace([',', '$', '€', '£', ' '], "").parse::<f64>() {
                Ok(budget) => lead.budget = Some(budget),
                Err(_) => errors.push("budget: must be a number".into()),
            },
            "tags" => {
                lead.tags = Some(
                    value
                        .split(';')
                        .map(|t| unguard_formula(t.trim()))
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
            "repeat_customer" if value.is_empty() => {}
            "repeat_customer" => match value.to_lowercase().as_str() {
                "true" | "yes" | "1" => lead.repeat_customer = Some(true),
                "false" | "no" | "0" => lead.repeat_customer = Some(false),
                _ => errors.push("repeat_customer: must be true or false".into()),
            },
            _ => {}
        }
    }
    if record.len() > headers.len() {
        errors.push(format!(
            "has {} fields, the header {}",
            record.len(),
            headers.len()
        ));
    }
    (lead, errors)
}

fn unguard_formula(value: &str) -> &str {
    match value.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_refused_and_told_which_header_to_send() {
        for empty in ["", "\n\n", "\u{feff}", ",,\n"] {
            let err = parse_import(empty.as_bytes()).expect_err(empty);
            assert!(matches!(err, ImportError::Empty), "{empty:?}: {err:?}");
            assert!(err.to_string().contains("first_name,last_name,email"));
        }
    }

    #[test]
    fn a_quote_left_open_refuses_its_row_instead_of_swallowing_the_rows_after_it() {
        let file = "first_name,email\n\"Ann,ann@example.com\nBen,ben@example.com\n";
        let parsed = parse_import(file.as_bytes()).expect("a readable file");
        assert!(parsed.valid.is_empty(), "{parsed:?}");
        assert_eq!(parsed.rows.len(), 1);
        assert!(
            parsed.rows[0].errors[0].contains("quote left open"),
            "{parsed:?}"
        );
    }

    #[test]
    fn an_exported_multi_line_company_or_name_imports_as_it_is() {
        let file = "first_name,company,email\n\"Ann\nMarie\",\"Acme\nNorth\",ann@example.com\n";
        let parsed = parse_import(file.as_bytes()).expect("a readable file");
        assert_eq!(parsed.valid.len(), 1, "{parsed:?}");
        assert_eq!(parsed.valid[0].1.company.as_deref(), Some("Acme\nNorth"));
    }

    #[test]
    fn free_text_may_still_span_lines() {
        let file = "first_name,interest\nAnn,\"red cars\nblue vans\"\n";
        let parsed = parse_import(file.as_bytes()).expect("a readable file");
        assert_eq!(parsed.valid.len(), 1, "{parsed:?}");
        assert_eq!(
            parsed.valid[0].1.interest.as_deref(),
            Some("red cars\nblue vans")
        );
    }
}

//! Replays every fuzz seed (`fuzz/corpus/<target>/`) through the function its fuzz target calls,
//! so the corpora guard the parsers in every `cargo test`, not only where cargo-fuzz runs.
//!
//! A seed's name says what it must give: `ok_` is accepted whole, `some_` is read but refuses some
//! events or rows (each with a reason), `bad_` is refused whole with a reason, and `crash_` (an
//! input a fuzzer once crashed on) only has to come back without a panic.

use std::{
    path::{Path, PathBuf},
    str::FromStr as _,
};

use leadflow_gateway::parse::{
    BatchError, ImportError, LeadTokens, PixelCredential, parse_batch, parse_import,
    parse_pixel_query,
};
use secrecy::SecretString;
use time::OffsetDateTime;
use uuid::Uuid;

/// The clock and the token secret the fuzz targets use, so seeds mean the same in both places.
const NOW: i64 = 1_795_000_000;
const LEAD: &str = "0192f5a0-8c3e-7b4a-9f1d-2b6c8e4a1d20";

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW).expect("a valid time")
}

fn lead_tokens() -> LeadTokens {
    LeadTokens::new(&SecretString::from("fuzz-secret-".repeat(4)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok,
    Some,
    Bad,
    Crash,
}

/// Every seed of `target` with what its name promises; a corpus too small to mean much fails.
fn seeds(target: &str) -> Vec<(String, Expect, Vec<u8>)> {
    let dir: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "fuzz",
        "corpus",
        target,
    ]
    .iter()
    .collect();
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let name = file_name(&path);
            let expect = match name.split_once('_').map(|(prefix, _)| prefix) {
                Some("ok") => Expect::Ok,
                Some("some") => Expect::Some,
                Some("bad") => Expect::Bad,
                Some("crash") => Expect::Crash,
                _ => panic!("{name}: seed names start with ok_, some_, bad_ or crash_"),
            };
            let bytes = std::fs::read(&path).expect("a readable seed");
            (name, expect, bytes)
        })
        .collect();
    seeds.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        seeds.len() >= 12,
        "{target}: only {} seeds in {}",
        seeds.len(),
        dir.display()
    );
    for kind in [Expect::Ok, Expect::Bad] {
        assert!(
            seeds.iter().any(|s| s.1 == kind),
            "{target} has no {kind:?} seed"
        );
    }
    seeds
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 file name")
        .to_owned()
}

#[test]
fn every_tracking_batch_seed_is_read_without_panicking_and_as_its_name_says() {
    for (name, expect, body) in seeds("tracking_batch") {
        let outcome = std::panic::catch_unwind(|| parse_batch(&body, Some("Mozilla/5.0"), now()));
        let outcome = outcome.unwrap_or_else(|_| panic!("{name}: the parser panicked"));
        match (expect, outcome) {
            (Expect::Crash, _) => {}
            (Expect::Ok, Ok(batch)) => {
                assert!(batch.errors.is_empty(), "{name}: {:?}", batch.errors);
                for event in &batch.events {
                    assert!(event.kind.starts_with("engagement."), "{name}");
                    assert!(event.lead_id.is_some() || event.anonymous_id.is_some());
                }
            }
            (Expect::Some, Ok(batch)) => {
                assert!(!batch.errors.is_empty(), "{name}: every event was accepted");
                let total = batch.events.len() + batch.errors.len();
                for error in &batch.errors {
                    assert!(error.index < total, "{name}: {error:?}");
                    assert!(error.detail.len() > 10, "{name}: vague {error:?}");
                }
            }
            (Expect::Bad, Err(err)) => {
                let detail = err.to_string();
                match err {
                    BatchError::NotABatch(_) => assert!(
                        detail.contains(r#"{"events": [...]}"#) && detail.len() > 50,
                        "{name}: {detail}"
                    ),
                    BatchError::TooMany => assert!(detail.contains("500"), "{name}: {detail}"),
                }
            }
            (expect, outcome) => panic!("{name}: expected {expect:?}, got {outcome:?}"),
        }
    }
}

#[test]
fn every_csv_import_seed_is_read_without_panicking_and_as_its_name_says() {
    for (name, expect, file) in seeds("csv_import") {
        let outcome = std::panic::catch_unwind(|| parse_import(&file));
        let outcome = outcome.unwrap_or_else(|_| panic!("{name}: the importer panicked"));
        match (expect, outcome) {
            (Expect::Crash, _) => {}
            (Expect::Ok, Ok(parsed)) => {
                assert!(!parsed.rows.is_empty(), "{name}: no rows");
                assert_eq!(parsed.valid.len(), parsed.rows.len(), "{name}: {parsed:?}");
                for (position, lead) in &parsed.valid {
                    assert_eq!(parsed.rows[*position].status, "imported");
                    assert!(
                        !lead.first_name.is_empty()
                            || lead.email.is_some()
                            || lead.company.is_some(),
                        "{name}: a lead without a name, e-mail or company"
                    );
                }
            }
            (Expect::Some, Ok(parsed)) => {
                let rejected: Vec<_> = parsed
                    .rows
                    .iter()
                    .filter(|r| r.status == "rejected")
                    .collect();
                assert!(!rejected.is_empty(), "{name}: every row was imported");
                for row in rejected {
                    assert!(
                        !row.errors.is_empty(),
                        "{name}: row {} has no reason",
                        row.row
                    );
                    assert!(row.errors.iter().all(|e| e.len() > 8), "{name}: {row:?}");
                }
            }
            (Expect::Bad, Err(err)) => {
                let detail = err.to_string();
                match &err {
                    ImportError::Empty => assert!(detail.contains("header such as"), "{detail}"),
                    ImportError::Header(_) => assert!(detail.contains("CSV header"), "{detail}"),
                    ImportError::UnknownColumns(unknown) => {
                        assert!(!unknown.is_empty());
                        assert!(unknown.iter().all(|u| detail.contains(u.as_str())));
                        assert!(detail.contains("allowed: first_name"), "{detail}");
                    }
                    ImportError::TooManyRows => assert!(detail.contains("10000"), "{detail}"),
                }
            }
            (expect, outcome) => panic!("{name}: expected {expect:?}, got {outcome:?}"),
        }
    }
}

#[test]
fn every_pixel_query_seed_is_read_without_panicking_and_as_its_name_says() {
    let lead = Uuid::from_str(LEAD).expect("a uuid");
    for (name, expect, query) in seeds("pixel_query") {
        let outcome = std::panic::catch_unwind(|| pixel(&query));
        let outcome = outcome.unwrap_or_else(|_| panic!("{name}: the pixel path panicked"));
        match (expect, outcome) {
            (Expect::Crash, _) => {}
            (Expect::Ok, Ok(recorded)) => assert_eq!(recorded, lead, "{name}"),
            (Expect::Bad, Err(reason)) => assert!(reason.len() > 8, "{name}: {reason}"),
            (expect, outcome) => panic!("{name}: expected {expect:?}, got {outcome:?}"),
        }
    }
}

/// The pixel handler's steps without the network: parse, check the credential's shape (a
/// token must verify; a write key is taken as known), and build the event. Ok names its lead.
fn pixel(query: &[u8]) -> Result<Uuid, String> {
    let query = std::str::from_utf8(query).map_err(|e| format!("not UTF-8: {e}"))?;
    let pixel = parse_pixel_query(query).map_err(|e| format!("query: {e}"))?;
    let lead = match pixel.credential() {
        PixelCredential::LeadToken(token) => lead_tokens()
            .verify(token)
            .ok_or("the lead token does not verify")?,
        PixelCredential::WriteKey { lead, .. } => lead.ok_or("a write key but no lead")?,
        PixelCredential::None => return Err("no key and no token".into()),
    };
    let event = pixel.event(lead, Some("Mozilla/5.0"), now())?;
    if let Some(url) = event.data["properties"].get("url") {
        assert!(url.as_str().is_some_and(|u| u.len() <= 2000));
    }
    event.lead_id.ok_or_else(|| "no lead on the event".into())
}

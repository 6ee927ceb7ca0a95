//! `POST /api/leads/import`: any file must give a per-row report or a file error, never a panic,
//! and every valid row must have a report line that says `imported`.
#![no_main]

use leadflow_gateway::parse::parse_import;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|file: &[u8]| {
    if let Ok(parsed) = parse_import(file) {
        for (position, _) in &parsed.valid {
            assert_eq!(parsed.rows[*position].status, "imported");
        }
        for row in &parsed.rows {
            assert!(row.status == "imported" || !row.errors.is_empty());
        }
    }
});

//! `POST /t/events`: any body, as JSON or as the `text/plain` a beacon sends (the gateway reads
//! both with the same parser), must give a batch or a batch error, never a panic.
#![no_main]

use leadflow_gateway::parse::{MAX_EVENTS, parse_batch};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fuzz_target!(|body: &[u8]| {
    // A fixed clock keeps a crash reproducible: the timestamp window depends on it.
    let now = OffsetDateTime::from_unix_timestamp(1_795_000_000).expect("a valid time");
    if let Ok(batch) = parse_batch(body, Some("Mozilla/5.0"), now) {
        assert!(batch.events.len() + batch.errors.len() <= MAX_EVENTS);
        for event in &batch.events {
            assert!(event.kind.starts_with("engagement."));
            assert!(event.lead_id.is_some() || event.anonymous_id.is_some());
        }
    }
});

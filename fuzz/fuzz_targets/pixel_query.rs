//! `GET /t/pixel.gif?...`: any query string goes through the query parser, the lead-token check
//! and the event builder the handler uses, and never panics.
#![no_main]

use leadflow_gateway::parse::{LeadTokens, PixelCredential, parse_pixel_query};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use time::OffsetDateTime;
use uuid::Uuid;

fuzz_target!(|query: &[u8]| {
    // A real query string is whatever bytes the URI held; the parser takes it as text.
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let Ok(pixel) = parse_pixel_query(query) else {
        return;
    };
    let tokens = LeadTokens::new(&SecretString::from("fuzz-secret-".repeat(4)));
    let lead = match pixel.credential() {
        PixelCredential::LeadToken(token) => tokens.verify(token),
        PixelCredential::WriteKey { lead, .. } => lead,
        PixelCredential::None => None,
    };
    let now = OffsetDateTime::from_unix_timestamp(1_795_000_000).expect("a valid time");
    let _ = pixel.event(lead.unwrap_or(Uuid::nil()), Some("Mozilla/5.0"), now);
});

use std::fmt;

/// The JetStream streams of DESIGN.md §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `engagement.<type>`: tracking events, written by the gateway, read by the scorer.
    Engagement,
    /// `leads.*`, `assignments.*`, `notes.*`, `scores.*`: domain events from the outbox and the scorer.
    Domain,
    /// `deadletter.>`: messages that failed `max_deliver` times, kept for inspection.
    DeadLetter,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Engagement, Stream::Domain, Stream::DeadLetter];

    pub fn base_name(self) -> &'static str {
        match self {
            Stream::Engagement => "ENGAGEMENT",
            Stream::Domain => "DOMAIN",
            Stream::DeadLetter => "DEADLETTER",
        }
    }

    /// Subject filters captured by the stream, without namespace.
    pub fn base_subjects(self) -> &'static [&'static str] {
        match self {
            Stream::Engagement => &["engagement.>"],
            Stream::Domain => &["leads.>", "assignments.>", "notes.>", "scores.>"],
            Stream::DeadLetter => &["deadletter.>"],
        }
    }
}

/// `LEADFLOW_NAMESPACE`: prefixes every stream, consumer and subject name so that deployments and
/// parallel tests can share one NATS server without seeing each other's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace(String);

#[derive(Debug, thiserror::Error)]
#[error(
    "LEADFLOW_NAMESPACE must be at most 32 characters of letters, digits, '_' or '-', and not a subject name such as leads or engagement (got {0:?})"
)]
pub struct NamespaceError(String);

/// First subject tokens of the un-namespaced streams: a namespace with one of these names would
/// make its subjects overlap theirs, and JetStream refuses overlapping streams.
const RESERVED: [&str; 7] = [
    "engagement",
    "leads",
    "assignments",
    "notes",
    "scores",
    "deadletter",
    "scorer",
];

impl Namespace {
    pub fn parse(raw: &str) -> Result<Self, NamespaceError> {
        let valid = raw.len() <= 32
            && !RESERVED.contains(&raw)
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(NamespaceError(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `leads.created` → `ns.leads.created` (unchanged when the namespace is empty).
    pub fn subject(&self, subject: &str) -> String {
        if self.0.is_empty() {
            subject.to_owned()
        } else {
            format!("{}.{subject}", self.0)
        }
    }

    /// The logical subject of a namespaced one, or `None` when it belongs to another namespace.
    pub fn strip<'a>(&self, subject: &'a str) -> Option<&'a str> {
        if self.0.is_empty() {
            return Some(subject);
        }
        subject.strip_prefix(self.0.as_str())?.strip_prefix('.')
    }

    /// Stream and consumer names cannot contain dots, so the prefix joins with `_`.
    pub fn name(&self, name: &str) -> String {
        if self.0.is_empty() {
            name.to_owned()
        } else {
            format!("{}_{name}", self.0)
        }
    }

    pub fn stream_name(&self, stream: Stream) -> String {
        self.name(stream.base_name())
    }

    pub fn stream_subjects(&self, stream: Stream) -> Vec<String> {
        stream
            .base_subjects()
            .iter()
            .map(|s| self.subject(s))
            .collect()
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_namespace_leaves_names_as_designed() {
        let ns = Namespace::default();
        assert_eq!(ns.stream_name(Stream::Engagement), "ENGAGEMENT");
        assert_eq!(ns.subject("leads.created"), "leads.created");
        assert_eq!(ns.strip("leads.created"), Some("leads.created"));
    }

    #[test]
    fn namespace_prefixes_subjects_streams_and_consumers() {
        let ns = Namespace::parse("t42").expect("valid");
        assert_eq!(ns.subject("leads.created"), "t42.leads.created");
        assert_eq!(ns.stream_name(Stream::Domain), "t42_DOMAIN");
        assert_eq!(ns.name("scorer_leads"), "t42_scorer_leads");
        assert_eq!(
            ns.stream_subjects(Stream::Engagement),
            vec!["t42.engagement.>"]
        );
        assert_eq!(ns.strip("t42.leads.created"), Some("leads.created"));
        assert_eq!(ns.strip("t4.leads.created"), None);
        assert_eq!(ns.strip("t42leads.created"), None);
    }

    #[test]
    fn namespaces_that_would_break_subjects_are_refused() {
        for bad in [
            "a.b",
            "a b",
            "a*",
            ">",
            "leads",
            "engagement",
            &"x".repeat(33),
        ] {
            assert!(Namespace::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

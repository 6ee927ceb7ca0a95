//! Turns a database failure into one of DESIGN.md §6's `error_type` values, with a fix in plain
//! words, so whoever reads `/health` knows what to do without reading logs.

use std::{error::Error as _, io};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    DnsResolutionFailure,
    ConnectionRefused,
    AuthFailed,
    DatabaseMissing,
    Timeout,
    Tls,
    Other,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::DnsResolutionFailure => "dns_resolution_failure",
            ErrorType::ConnectionRefused => "connection_refused",
            ErrorType::AuthFailed => "auth_failed",
            ErrorType::DatabaseMissing => "database_missing",
            ErrorType::Timeout => "timeout",
            ErrorType::Tls => "tls",
            ErrorType::Other => "other",
        }
    }

    /// What an operator should do about it.
    pub fn fix(self) -> &'static str {
        match self {
            ErrorType::DnsResolutionFailure => {
                "The database host name does not resolve. Check the host in DATABASE_URL for typos, and that this machine's DNS can resolve it (in containers, use the service name)."
            }
            ErrorType::ConnectionRefused => {
                "Nothing accepts connections at the database address. Start PostgreSQL, or fix the host and port in DATABASE_URL."
            }
            ErrorType::AuthFailed => {
                "PostgreSQL refused the credentials. Check the user and password in DATABASE_URL and the server's pg_hba.conf."
            }
            ErrorType::DatabaseMissing => {
                "The server is up but the database does not exist. Run `leadflow migrate` (it creates it) or fix the database name in DATABASE_URL."
            }
            ErrorType::Timeout => {
                "The database did not answer in time. Check network reachability and server load, or raise DB_ACQUIRE_TIMEOUT."
            }
            ErrorType::Tls => {
                "The TLS handshake with the database failed. Check sslmode in DATABASE_URL and the server's certificate."
            }
            ErrorType::Other => {
                "The database failed in an unexpected way. See error_message and the service logs."
            }
        }
    }
}

/// Classifies a failure to connect or query. Walks the whole source chain, because sqlx wraps the
/// resolver's and the socket's errors.
pub fn classify(err: &sqlx::Error) -> ErrorType {
    match err {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01" | "28000") => ErrorType::AuthFailed,
            Some("3D000") => ErrorType::DatabaseMissing,
            Some("57014") => ErrorType::Timeout,
            _ => ErrorType::Other,
        },
        sqlx::Error::Tls(_) => ErrorType::Tls,
        sqlx::Error::PoolTimedOut => ErrorType::Timeout,
        sqlx::Error::Io(io) => classify_io(io),
        other => {
            let mut source = other.source();
            while let Some(err) = source {
                if let Some(io) = err.downcast_ref::<io::Error>() {
                    return classify_io(io);
                }
                source = err.source();
            }
            if looks_like_dns(&other.to_string()) {
                ErrorType::DnsResolutionFailure
            } else {
                ErrorType::Other
            }
        }
    }
}

fn classify_io(err: &io::Error) -> ErrorType {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => ErrorType::ConnectionRefused,
        io::ErrorKind::TimedOut => ErrorType::Timeout,
        _ if looks_like_dns(&err.to_string()) => ErrorType::DnsResolutionFailure,
        _ => ErrorType::Other,
    }
}

/// getaddrinfo's messages: the name is unknown (EAI_NONAME, EAI_NODATA) or the resolver could not
/// be reached (EAI_AGAIN). Both mean "fix the host or the DNS", so both are a resolution failure.
fn looks_like_dns(message: &str) -> bool {
    const MARKERS: [&str; 6] = [
        "failed to lookup address",
        "name or service not known",
        "temporary failure in name resolution",
        "no address associated with hostname",
        "nodename nor servname",
        "name resolution",
    ];
    let message = message.to_ascii_lowercase();
    MARKERS.iter().any(|m| message.contains(m))
}

/// True when the error says the database itself is unusable (as opposed to a bad query or a
/// constraint violation); only these count against the circuit breaker.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception, 57P0x: shutdown / crash, 53: insufficient resources,
            // 28 and 3D000: we cannot log in to the database at all.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code.starts_with("28")
                || code == "3D000"
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_messages_for_unknown_and_unreachable_names_are_dns_failures() {
        for message in [
            "failed to lookup address information: Name or service not known",
            "failed to lookup address information: Temporary failure in name resolution",
            "failed to lookup address information: No address associated with hostname",
        ] {
            let err = sqlx::Error::Io(io::Error::other(message));
            assert_eq!(classify(&err), ErrorType::DnsResolutionFailure, "{message}");
        }
    }

    #[test]
    fn refused_and_timed_out_sockets_are_told_apart() {
        let refused = sqlx::Error::Io(io::ErrorKind::ConnectionRefused.into());
        assert_eq!(classify(&refused), ErrorType::ConnectionRefused);
        let timeout = sqlx::Error::Io(io::ErrorKind::TimedOut.into());
        assert_eq!(classify(&timeout), ErrorType::Timeout);
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), ErrorType::Timeout);
    }

    #[test]
    fn every_error_type_has_a_fix() {
        for t in [
            ErrorType::DnsResolutionFailure,
            ErrorType::ConnectionRefused,
            ErrorType::AuthFailed,
            ErrorType::DatabaseMissing,
            ErrorType::Timeout,
            ErrorType::Tls,
            ErrorType::Other,
        ] {
            assert!(t.fix().len() > 30, "{t:?}");
            assert_eq!(serde_json::to_value(t).expect("json"), t.as_str());
        }
    }

    #[test]
    fn only_availability_failures_count_against_the_breaker() {
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
    }
}

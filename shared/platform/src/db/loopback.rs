//! TLS is off by default on connections to a database on this host.
//!
//! sqlx, like libpq, defaults to `sslmode=prefer`: TLS whenever the server offers it, as Debian's
//! PostgreSQL does out of the box. Over the loopback interface TLS protects nothing (traffic never
//! leaves the machine) and costs every round trip encryption on both ends: a twelfth of the
//! scorer's CPU in a drain. A URL or `PGSSLMODE` that names an `sslmode` is always obeyed.

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// `options` with TLS off if the database is on this host and nobody asked for an `sslmode`.
pub fn without_tls_on_loopback(
    options: PgConnectOptions,
    url: &str,
    env_sslmode: Option<&str>,
) -> PgConnectOptions {
    if asks_for_sslmode(url) || env_sslmode.is_some_and(|m| !m.is_empty()) {
        return options;
    }
    if is_loopback(options.get_host()) {
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options
    }
}

fn asks_for_sslmode(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some("sslmode"))
    })
}

/// `localhost`, 127.0.0.0/8 and ::1 (a Unix socket path never uses TLS anyway).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    fn mode(url: &str, env: Option<&str>) -> PgSslMode {
        // As sqlx builds them: `PGSSLMODE` first, the URL's `sslmode` over it.
        let mut options = PgConnectOptions::from_str(url).expect("url");
        if let Some(env) = env.filter(|_| !asks_for_sslmode(url)) {
            options = options.ssl_mode(env.parse().expect("mode"));
        }
        without_tls_on_loopback(options, url, env).get_ssl_mode()
    }

    #[test]
    fn loopback_goes_without_tls_unless_someone_asked_for_it() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/db",
            "postgres://postgres@localhost/db",
            "postgres://postgres@[::1]:5432/db",
            "postgres://u:p@127.0.0.2/db?application_name=x",
        ] {
            assert!(matches!(mode(url, None), PgSslMode::Disable), "{url}");
        }
        assert!(matches!(
            mode("postgres://db.internal:5432/db", None),
            PgSslMode::Prefer
        ));
        assert!(matches!(
            mode("postgres://127.0.0.1/db?sslmode=require", None),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode("postgres://127.0.0.1/db?x=1&sslmode=prefer", None),
            PgSslMode::Prefer
        ));
        assert!(matches!(
            mode("postgres://127.0.0.1/db", Some("verify-full")),
            PgSslMode::VerifyFull
        ));
    }
}

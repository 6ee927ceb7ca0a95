//! TLS is off by default on connections to a database on this host.
//!
//! sqlx, like libpq, defaults to `sslmode=prefer`: TLS whenever the server offers it, as Debian's
//! PostgreSQL does out of the box. Over the loopback interface TLS protects nothing (traffic never
//! leaves the machine) and costs every round trip encryption on both ends: a twelfth of the
//! scorer's CPU in a drain. Any TLS setting in the URL (`sslmode`, `ssl-mode`, `sslrootcert`, ...)
//! or a `PGSSL*` variable is taken as asking for TLS and always obeyed; so is a URL whose host is
//! not a loopback address. A local forwarder that carries the connection off this host must
//! therefore name an `sslmode`.

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// `options` with TLS off if the database is on this host and nothing asks for TLS. `pgssl_env`
/// says whether any `PGSSL*` variable is set.
pub fn without_tls_on_loopback(
    options: PgConnectOptions,
    url: &str,
    pgssl_env: bool,
) -> PgConnectOptions {
    if pgssl_env || asks_for_tls(url) || !is_loopback(options.get_host()) {
        return options;
    }
    options.ssl_mode(PgSslMode::Disable)
}

/// Whether a `PGSSL*` variable (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, ...) is set.
pub fn pgssl_env() -> bool {
    std::env::vars_os().any(|(name, value)| {
        name.to_str().is_some_and(|n| n.starts_with("PGSSL")) && !value.is_empty()
    })
}

/// Whether the URL sets anything about TLS: every such parameter, in either spelling sqlx takes,
/// starts with `ssl`.
fn asks_for_tls(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|url| {
        url.query_pairs()
            .any(|(key, _)| key.to_ascii_lowercase().starts_with("ssl"))
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

    fn mode(url: &str, pgssl_env: bool) -> PgSslMode {
        let options = PgConnectOptions::from_str(url).expect("url");
        without_tls_on_loopback(options, url, pgssl_env).get_ssl_mode()
    }

    #[test]
    fn loopback_goes_without_tls_unless_someone_asked_for_it() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/db",
            "postgres://postgres@localhost/db",
            "postgres://postgres@[::1]:5432/db",
            "postgres://u:p@127.0.0.2/db?application_name=x",
        ] {
            assert!(matches!(mode(url, false), PgSslMode::Disable), "{url}");
        }
        assert!(matches!(
            mode("postgres://db.internal:5432/db", false),
            PgSslMode::Prefer
        ));
        for url in [
            "postgres://127.0.0.1/db?sslmode=require",
            "postgres://127.0.0.1/db?ssl-mode=require",
            "postgres://127.0.0.1/db?x=1&sslmode=require",
        ] {
            assert!(matches!(mode(url, false), PgSslMode::Require), "{url}");
        }
        for url in [
            "postgres://127.0.0.1/db?sslrootcert=/etc/ca.pem",
            "postgres://127.0.0.1/db?ssl-root-cert=/etc/ca.pem",
        ] {
            assert!(
                !matches!(mode(url, false), PgSslMode::Disable),
                "a certificate asks for TLS: {url}"
            );
        }
        assert!(
            matches!(mode("postgres://127.0.0.1/db", true), PgSslMode::Prefer),
            "a PGSSL* variable asks for TLS"
        );
    }
}

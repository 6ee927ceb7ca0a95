//! Configuration shared by every service, read from the environment (clap maps each field to its
//! variable). Defaults work on a developer machine with local PostgreSQL and NATS; a wrong value
//! stops start-up with clap's message, which names the variable and what it expected.

use std::{fmt, str::FromStr, time::Duration};

use leadflow_events::Namespace;
use url::Url;

/// Everything the platform needs; each service flattens this into its own command line.
#[derive(Debug, Clone, clap::Args)]
pub struct PlatformConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub breaker: BreakerConfig,
    #[command(flatten)]
    pub nats: NatsConfig,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// How often health is re-checked in the background (database probe, consumer lag).
    #[arg(long, env = "HEALTH_PROBE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub health_probe_interval: Duration,
    /// How long shutdown waits for in-flight requests and messages before giving up.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

impl PlatformConfig {
    /// Parses flags such as `--database-url` (falling back to the environment, then defaults):
    /// for tests and programs that embed a service.
    pub fn try_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        #[command(args_override_self = true)]
        struct Only {
            #[command(flatten)]
            platform: PlatformConfig,
        }
        let args = std::iter::once(std::ffi::OsString::from("leadflow"))
            .chain(args.into_iter().map(Into::into));
        <Only as clap::Parser>::try_parse_from(args).map(|only| only.platform)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; always name the user. The password is redacted wherever it is shown.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/leadflow",
        hide_env_values = true,
        value_parser = SecretParser::<DatabaseUrl>::new("DATABASE_URL")
    )]
    pub database_url: DatabaseUrl,
    /// Most connections the pool opens.
    #[arg(long, env = "DB_POOL_MAX", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_max: u32,
    /// Connections kept open even when idle.
    #[arg(long, env = "DB_POOL_MIN", default_value_t = 0)]
    pub db_pool_min: u32,
    /// How long a query waits for a free connection before failing.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub db_acquire_timeout: Duration,
    /// Server-side limit for one statement (PostgreSQL `statement_timeout`).
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub db_statement_timeout: Duration,
}

/// The circuit breaker in front of the database: after `BREAKER_FAILURE_THRESHOLD` consecutive
/// connection failures it opens and rejects at once for `BREAKER_COOLDOWN`, then lets one trial through.
#[derive(Debug, Clone, clap::Args)]
pub struct BreakerConfig {
    /// Consecutive connection failures that open the database circuit breaker.
    #[arg(long, env = "BREAKER_FAILURE_THRESHOLD", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_failure_threshold: u32,
    /// How long the open breaker rejects before letting one trial call through.
    #[arg(long, env = "BREAKER_COOLDOWN", default_value = "5s", value_parser = parse_duration)]
    pub breaker_cooldown: Duration,
}

#[derive(Clone, clap::Args)]
pub struct NatsConfig {
    /// NATS server URL(s), comma-separated for a cluster.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true,
        value_parser = clap::builder::TypedValueParser::map(SecretParser::<NatsUrlList>::new("NATS_URL"), |list: NatsUrlList| list.0)
    )]
    pub nats_url: String,
    /// Prefix for stream, consumer and subject names, so deployments can share a NATS server.
    #[arg(long, env = "LEADFLOW_NAMESPACE", default_value = "", value_parser = parse_namespace)]
    pub leadflow_namespace: Namespace,
    /// JetStream de-duplication window for `Nats-Msg-Id`.
    #[arg(long, env = "NATS_DUPLICATE_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub nats_duplicate_window: Duration,
    /// How long a publish waits for JetStream's acknowledgement.
    #[arg(long, env = "NATS_ACK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub nats_ack_timeout: Duration,
    /// Copies of each stream in a NATS cluster (1, 3 or 5): with 3, JetStream acknowledges a
    /// publish once two servers hold it, and the streams survive the loss of any one server.
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_stream_replicas: u8,
    /// Deliveries of one message before it is dead-lettered.
    #[arg(long, env = "NATS_MAX_DELIVER", default_value_t = 5,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub nats_max_deliver: i64,
    /// How long a consumer has to acknowledge a message before it is redelivered.
    #[arg(long, env = "NATS_ACK_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub nats_ack_wait: Duration,
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("nats_url", &redact_nats_url(&self.nats_url))
            .field("leadflow_namespace", &self.leadflow_namespace)
            .field("nats_duplicate_window", &self.nats_duplicate_window)
            .field("nats_stream_replicas", &self.nats_stream_replicas)
            .field("nats_ack_timeout", &self.nats_ack_timeout)
            .field("nats_max_deliver", &self.nats_max_deliver)
            .field("nats_ack_wait", &self.nats_ack_wait)
            .finish()
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryConfig {
    /// `text` (human-readable) or `json` (one object per line, for log shippers).
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`; traces are exported only when set.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Accepts `250ms`, `5s`, `2m`, `1h`: the units people write in environment files.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|e| format!("expected a duration such as 500ms, 5s or 2m ({e})"))
}

fn parse_namespace(raw: &str) -> Result<Namespace, String> {
    Namespace::parse(raw.trim()).map_err(|e| e.to_string())
}

/// Parses a secret-bearing value (a URL with a password) for clap without echoing it: clap's own
/// error would quote the rejected value. The error names `variable` and says only what is wrong.
#[derive(Clone)]
pub struct SecretParser<T> {
    variable: &'static str,
    value: std::marker::PhantomData<fn() -> T>,
}

impl<T> SecretParser<T> {
    pub const fn new(variable: &'static str) -> Self {
        Self {
            variable,
            value: std::marker::PhantomData,
        }
    }
}

impl<T> clap::builder::TypedValueParser for SecretParser<T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let invalid = |detail: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for {}: {detail}\n", self.variable),
            )
            .with_cmd(cmd)
        };
        value
            .to_str()
            .ok_or_else(|| invalid("it is not valid UTF-8".into()))?
            .parse()
            .map_err(invalid)
    }
}

/// A PostgreSQL URL whose password never reaches logs, errors or health output: `Debug` and
/// `Display` redact it, and only [`DatabaseUrl::expose`] hands out the real string.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(Url);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The URL with its password (in the authority or as `?password=`) replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut url = self.0.clone();
        if url.password().is_some() {
            // set_password only fails for URLs that cannot have credentials, and ours can.
            let _ = url.set_password(Some("***"));
        }
        if url.query_pairs().any(|(k, _)| k == "password") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "***".to_owned()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }

    pub fn password(&self) -> Option<String> {
        self.0.password().map(percent_decode).or_else(|| {
            self.0
                .query_pairs()
                .find(|(k, _)| k == "password")
                .map(|(_, v)| v.into_owned())
        })
    }

    pub fn database_name(&self) -> &str {
        self.0.path().trim_start_matches('/')
    }

    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or("")
    }

    /// The same server and credentials, another database (to create ours, or a test's).
    pub fn with_database(&self, name: &str) -> Self {
        let mut url = self.0.clone();
        url.set_path(&format!("/{name}"));
        Self(url)
    }

    /// Removes the password from a message that might quote the URL or the password itself.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.replace(self.0.as_str(), &self.redacted());
        let raw_query_password = self
            .0
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("password=")))
            .map(str::to_owned);
        for secret in [
            self.0.password().map(str::to_owned),
            self.password(),
            raw_query_password,
        ]
        .into_iter()
        .flatten()
        {
            if !secret.is_empty() {
                out = out.replace(&secret, "***");
            }
        }
        out
    }
}

/// A URL's user or password as written before encoding. Not form decoding: there `+` is a space,
/// and a password with a `+` in it came out wrong.
fn percent_decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        // The message must not echo the value: it may carry a password.
        let url = Url::parse(raw.trim()).map_err(|e| {
            format!("expected postgres://user[:password]@host[:port]/database ({e})")
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "expected a postgres:// URL, got scheme {:?}",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(
                "expected a host, as in postgres://postgres@127.0.0.1:5432/leadflow".into(),
            );
        }
        if url.username().is_empty() {
            return Err(
                "expected a user, as in postgres://postgres@127.0.0.1:5432/leadflow".into(),
            );
        }
        let name = url.path().trim_start_matches('/');
        if name.is_empty() || name.contains('/') {
            return Err(
                "expected a database name, as in postgres://postgres@127.0.0.1:5432/leadflow"
                    .into(),
            );
        }
        Ok(Self(url))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Removes any `user:password@` from a NATS URL list before it is shown.
pub fn redact_nats_url(raw: &str) -> String {
    nats_url_parts(raw)
        .map(|part| match parse_nats_url(part) {
            Some(url) => without_credentials(url),
            None => "<unparseable>".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The servers of a NATS URL list, without credentials, for the client: it takes those as
/// options ([`nats_credentials`]), and it logs the servers it is given. A list, because the
/// client reads a single string as one URL, and a comma-separated one does not parse.
pub fn nats_servers(raw: &str) -> Vec<String> {
    nats_url_parts(raw)
        .map(|part| parse_nats_url(part).map_or_else(|| part.to_owned(), without_credentials))
        .collect()
}

fn nats_url_parts(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
}

/// As the client reads a server: `nats://` when no scheme is given, so that in `user:pw@host`
/// the user is not taken for a scheme.
fn parse_nats_url(part: &str) -> Option<Url> {
    if part.contains("://") {
        Url::parse(part).ok()
    } else {
        Url::parse(&format!("nats://{part}")).ok()
    }
}

fn without_credentials(mut url: Url) -> String {
    // Only a URL without a host refuses these, and `check_nats_urls` lets none through.
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
}

/// `NATS_URL` as checked at start-up: at least one server, each a `nats://` or `tls://` URL with a
/// host (the scheme may be left out). The client, handed an empty list, retried it without a
/// pause and held a core; handed a bad entry, it retried for ever. Read through [`SecretParser`],
/// and its errors name an entry by position only, as it may hold credentials.
#[derive(Clone)]
struct NatsUrlList(String);

impl FromStr for NatsUrlList {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        check_nats_urls(raw).map(Self)
    }
}

fn check_nats_urls(raw: &str) -> Result<String, String> {
    let parts: Vec<&str> = nats_url_parts(raw).collect();
    if parts.is_empty() {
        return Err("names no server; give one or more, comma-separated".into());
    }
    for (i, part) in parts.iter().enumerate() {
        let fits = parse_nats_url(part)
            .is_some_and(|url| url.has_host() && matches!(url.scheme(), "nats" | "tls"));
        if !fits {
            return Err(format!(
                "entry {} of {} is not a NATS server URL (nats://host:4222 or tls://host:4222)",
                i + 1,
                parts.len()
            ));
        }
    }
    Ok(raw.to_owned())
}

/// Credentials written into a NATS URL: `nats://user:password@host` or `nats://token@host`.
#[derive(PartialEq, Eq)]
pub enum NatsCredentials {
    UserPassword { user: String, password: String },
    Token(String),
}

impl fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user}, <redacted>)"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// The credentials of the first URL in the list that has any, percent-decoded, for every server
/// (the client holds one set). async-nats reads none from the URL itself (0.51 sends only those
/// set as options), so without this a server requiring them refuses every connection as an
/// authorization violation.
pub fn nats_credentials(raw: &str) -> Option<NatsCredentials> {
    nats_url_parts(raw)
        .filter_map(parse_nats_url)
        .find_map(|url| match url.password() {
            Some(password) => Some(NatsCredentials::UserPassword {
                user: percent_decode(url.username()),
                password: percent_decode(password),
            }),
            None if !url.username().is_empty() => {
                Some(NatsCredentials::Token(percent_decode(url.username())))
            }
            None => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_on_a_developer_machine() {
        let cfg = PlatformConfig::try_from_args::<_, &str>([]).expect("defaults parse");
        assert_eq!(cfg.database.database_url.database_name(), "leadflow");
        assert_eq!(cfg.nats.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(cfg.breaker.breaker_failure_threshold, 5);
        // With the 5 s probe interval, the breaker closes within 10 s of the database's return.
        assert_eq!(cfg.breaker.breaker_cooldown, Duration::from_secs(5));
        assert_eq!(cfg.nats.nats_duplicate_window, Duration::from_secs(120));
    }

    #[test]
    fn a_bad_value_names_its_variable_and_never_echoes_a_password() {
        let err = PlatformConfig::try_from_args(["--database-url", "mysql://u:hunter2@db/x"])
            .expect_err("rejected");
        let text = err.to_string();
        assert!(text.contains("DATABASE_URL"), "{text}");
        assert!(text.contains("postgres://"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");

        let err = PlatformConfig::try_from_args(["--db-pool-max", "lots"]).expect_err("rejected");
        assert!(err.to_string().contains("DB_POOL_MAX"), "{err}");
    }

    #[test]
    fn a_database_password_is_percent_decoded_not_form_decoded() {
        let url: DatabaseUrl = "postgres://svc:a+b%2Bc%40d@db:5432/leadflow"
            .parse()
            .expect("url");
        assert_eq!(url.password().as_deref(), Some("a+b+c@d"));
    }

    #[test]
    fn database_url_redacts_its_password_everywhere() {
        let url: DatabaseUrl = "postgres://app:s%40cret@db.internal:5432/leadflow"
            .parse()
            .expect("valid");
        assert_eq!(
            url.redacted(),
            "postgres://app:***@db.internal:5432/leadflow"
        );
        assert!(!format!("{url:?} {url}").contains("cret"));
        assert_eq!(url.password().as_deref(), Some("s@cret"));
        let scrubbed = url.scrub(
            "failed for s@cret and s%40cret via postgres://app:s%40cret@db.internal:5432/leadflow",
        );
        assert!(!scrubbed.contains("cret"), "{scrubbed}");
        assert_eq!(url.with_database("other").database_name(), "other");

        let in_query: DatabaseUrl = "postgres://app@db/leadflow?sslmode=require&password=t0ps3cret"
            .parse()
            .expect("valid");
        assert!(
            !in_query.redacted().contains("t0ps3cret"),
            "{}",
            in_query.redacted()
        );
        assert!(in_query.redacted().contains("sslmode=require"));
        assert!(
            !in_query
                .scrub("auth failed for t0ps3cret")
                .contains("t0ps3cret")
        );
    }

    #[test]
    fn nats_credentials_stay_out_of_debug_output() {
        let mut cfg = PlatformConfig::try_from_args::<_, &str>([]).expect("defaults");
        cfg.nats.nats_url = "nats://svc:natsp4ss@nats:4222".into();
        assert!(!format!("{cfg:?}").contains("natsp4ss"));
    }

    #[test]
    fn nats_credentials_are_taken_from_the_first_url_that_has_them_and_decoded() {
        assert_eq!(
            nats_credentials("nats://a:4222, nats://svc:p%40ss%2Fw0rd@b:4222"),
            Some(NatsCredentials::UserPassword {
                user: "svc".into(),
                password: "p@ss/w0rd".into()
            })
        );
        assert_eq!(
            nats_credentials("nats://s3cr3t-t0ken@a:4222"),
            Some(NatsCredentials::Token("s3cr3t-t0ken".into()))
        );
        assert_eq!(nats_credentials("nats://a:4222,nats://b:4222"), None);
        assert_eq!(
            nats_servers("nats://svc:pw@a:4222, nats://b:4222,c:4222,"),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
        // Without a scheme, as the client reads it: the user is not a scheme.
        assert_eq!(
            nats_credentials("svc:pw@a:4222"),
            Some(NatsCredentials::UserPassword {
                user: "svc".into(),
                password: "pw".into()
            })
        );
        assert_eq!(nats_servers("svc:pw@a:4222"), ["nats://a:4222"]);
        assert_eq!(
            redact_nats_url("svc:pw@a:4222,b:4222"),
            "nats://a:4222,nats://b:4222"
        );
        let shown = format!("{:?}", nats_credentials("nats://svc:pw@a:4222"));
        assert!(!shown.contains("pw"), "{shown}");
    }

    #[test]
    fn a_nats_url_list_must_name_servers_and_its_errors_show_no_credentials() {
        for good in [
            "nats://127.0.0.1:4222",
            "nats://a:4222, tls://b:4222,c:4222",
            "svc:pw@nats-0:4222",
        ] {
            assert!(check_nats_urls(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            " , ",
            "http://a:4222",
            "nats://svc:s3cret@",
            "nats://a:4222,::1",
        ] {
            let error = check_nats_urls(bad).expect_err(bad);
            assert!(!error.contains("s3cret"), "{error}");
        }
        assert!(PlatformConfig::try_from_args(["--nats-url", "nats://a:4222"]).is_ok());
        assert!(
            PlatformConfig::try_from_args(["--nats-url", ""]).is_err(),
            "refused at start-up"
        );
        // clap's own message quotes a rejected value unless the parser says otherwise.
        let refused =
            PlatformConfig::try_from_args(["--nats-url", "nats://svc:s3cret@a:4222,http://b"])
                .expect_err("refused")
                .to_string();
        assert!(refused.contains("NATS_URL"), "{refused}");
        assert!(!refused.contains("s3cret"), "{refused}");
    }

    #[test]
    fn nats_credentials_are_redacted() {
        assert_eq!(
            redact_nats_url("nats://u:p@a:4222, nats://b:4222"),
            "nats://a:4222,nats://b:4222"
        );
    }
}

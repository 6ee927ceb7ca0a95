use std::{net::SocketAddr, num::NonZeroU32, str::FromStr, time::Duration};

use leadflow_platform::config::{PlatformConfig, parse_duration};
use secrecy::{ExposeSecret, SecretString};

/// `gateway`'s command line and environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "gateway",
    version,
    about = "leadflow gateway: REST API, auth and tracking",
    args_override_self = true
)]
pub struct GatewayConfig {
    #[command(flatten)]
    pub platform: PlatformConfig,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Where the REST API listens.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "0.0.0.0:8080")]
    pub gateway_addr: SocketAddr,
    /// HMAC key for access tokens, at least 32 bytes. Required (`leadflow up` generates one).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    #[command(flatten)]
    pub admin: AdminBootstrap,
    /// `open`: anyone may register (as a sales rep); `closed`: only admins and managers add users.
    #[arg(long, env = "REGISTRATION", default_value = "open")]
    pub registration: Registration,
    /// Browser origins allowed to call the API (comma-separated); none gets no CORS headers.
    #[arg(
        long,
        env = "ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_origins: Vec<String>,
    /// Lifetime of access tokens (JWT).
    #[arg(long, env = "ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_token_ttl: Duration,
    /// Lifetime of refresh tokens; each use rotates the token.
    #[arg(long, env = "REFRESH_TOKEN_TTL", default_value = "30d", value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,
    /// Login and register attempts per client address, as `count/period`.
    #[arg(long, env = "LOGIN_RATE_PER_IP", default_value = "30/1m")]
    pub login_rate_per_ip: RateSpec,
    /// Login attempts per account (e-mail), as `count/period`: stops password guessing.
    #[arg(long, env = "LOGIN_RATE_PER_ACCOUNT", default_value = "5/1m")]
    pub login_rate_per_account: RateSpec,
    /// API requests per access token, as `count/period`.
    #[arg(long, env = "API_RATE_PER_TOKEN", default_value = "3000/1m")]
    pub api_rate_per_token: RateSpec,
    /// Longest a request may take before it is answered 503.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Password hashes computed at once (argon2 uses 19 MiB and a core each); 0 = half the cores.
    #[arg(long, env = "PASSWORD_HASH_CONCURRENCY", default_value_t = 0)]
    pub password_hash_concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Registration {
    Open,
    Closed,
}

/// `count/period`, e.g. `5/1m`: at most `count` events per `period`, refilled evenly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl FromStr for RateSpec {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let expected = || format!("expected count/period such as 5/1m (got {raw:?})");
        let (count, period) = raw.split_once('/').ok_or_else(expected)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| expected())?;
        let period = parse_duration(period)?;
        if period.is_zero() {
            return Err(expected());
        }
        Ok(Self { count, period })
    }
}

/// When both are set, the gateway creates (or resets) this admin at start-up.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminBootstrap {
    /// E-mail of an admin to create (or reset) at start-up.
    #[arg(long, env = "LEADFLOW_ADMIN_EMAIL")]
    pub leadflow_admin_email: Option<String>,
    /// That admin's password (8 to 128 characters).
    #[arg(long, env = "LEADFLOW_ADMIN_PASSWORD", hide_env_values = true)]
    pub leadflow_admin_password: Option<SecretString>,
    /// That admin's display name.
    #[arg(long, env = "LEADFLOW_ADMIN_NAME", default_value = "Administrator")]
    pub leadflow_admin_name: String,
}

pub const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "JWT_SECRET is not set: set it to at least {MIN_JWT_SECRET_BYTES} random bytes (for example `openssl rand -base64 48`), or run `leadflow up`, which generates one"
    )]
    MissingJwtSecret,
    #[error("JWT_SECRET is too short: use at least {MIN_JWT_SECRET_BYTES} bytes (got {0})")]
    ShortJwtSecret(usize),
    #[error("LEADFLOW_ADMIN_EMAIL and LEADFLOW_ADMIN_PASSWORD must be set together")]
    HalfAdmin,
    #[error(
        "ACCESS_TOKEN_TTL is too long: at most 24h, so signing out ends every access token of the sign-in"
    )]
    LongAccessTtl,
}

impl GatewayArgs {
    /// The validated signing secret.
    pub fn jwt_secret(&self) -> Result<&SecretString, ConfigError> {
        let secret = self
            .jwt_secret
            .as_ref()
            .ok_or(ConfigError::MissingJwtSecret)?;
        let len = secret.expose_secret().len();
        if len < MIN_JWT_SECRET_BYTES {
            return Err(ConfigError::ShortJwtSecret(len));
        }
        Ok(secret)
    }

    /// Checks what the signing secret alone does not: the access-token lifetime.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.jwt_secret()?;
        if self.access_token_ttl > leadflow_platform::access::MAX_ACCESS_TTL {
            return Err(ConfigError::LongAccessTtl);
        }
        Ok(())
    }
}

impl AdminBootstrap {
    pub fn requested(&self) -> Result<Option<(&str, &SecretString)>, ConfigError> {
        match (&self.leadflow_admin_email, &self.leadflow_admin_password) {
            (Some(email), Some(password)) => Ok(Some((email.as_str(), password))),
            (None, None) => Ok(None),
            _ => Err(ConfigError::HalfAdmin),
        }
    }
}

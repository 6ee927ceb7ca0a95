use std::net::SocketAddr;

use leadflow_platform::config::PlatformConfig;
use secrecy::{ExposeSecret, SecretString};

/// `gateway`'s command line and environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "gateway",
    version,
    about = "leadflow gateway: REST API, auth and tracking"
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

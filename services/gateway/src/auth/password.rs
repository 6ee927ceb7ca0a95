//! Password hashing with argon2id at OWASP's recommended parameters (19 MiB, 2 passes, 1 lane).
//! Hashing is deliberately slow, so it runs on the blocking pool, never on a request thread.

use std::{sync::OnceLock, time::Duration};

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use secrecy::{ExposeSecret, SecretString};

use crate::{error::ApiError, state::AppState};

pub const MIN_LENGTH: usize = 8;
pub const MAX_LENGTH: usize = 128;

/// The most common passwords of public breach lists (those long enough to pass the length rule).
const COMMON: &str = include_str!("common_passwords.txt");

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be {MIN_LENGTH} to {MAX_LENGTH} characters long")]
    Length,
    #[error("this password is one of the most common ones; choose another")]
    Common,
    #[error("hashing the password failed")]
    Hash,
}

fn hasher() -> Argon2<'static> {
    // Constant, valid parameters: Params::new only fails outside argon2's documented ranges.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks the length rule (counted in characters, not bytes, so non-ASCII passwords are fair)
/// and refuses the most common passwords.
pub fn validate(password: &str) -> Result<(), PasswordError> {
    let chars = password.chars().count();
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&chars) {
        return Err(PasswordError::Length);
    }
    let lowered = password.to_lowercase();
    if COMMON.lines().any(|common| common == lowered) {
        return Err(PasswordError::Common);
    }
    Ok(())
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`) with a fresh random salt.
pub async fn hash(password: SecretString) -> Result<String, PasswordError> {
    validate(password.expose_secret())?;
    let span = tracing::info_span!("password.hash");
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        hasher()
            .hash_password(password.expose_secret().as_bytes())
            .map(|h| h.to_string())
            .map_err(|_| PasswordError::Hash)
    })
    .await
    .map_err(|_| PasswordError::Hash)?
}

/// True when `password` matches `phc`. A malformed stored hash is a mismatch, never a panic.
/// Without a stored hash it checks against a dummy one, so "no such user" takes as long as
/// "wrong password" and the two cannot be told apart by timing.
pub async fn verify(password: SecretString, phc: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || verify_now(&password, phc))
        .await
        .unwrap_or(false)
}

fn verify_now(password: &SecretString, phc: Option<String>) -> bool {
    let _span = tracing::info_span!("password.verify").entered();
    let known = phc.is_some();
    let phc = phc.unwrap_or_else(|| dummy_hash().to_owned());
    let matches = hasher()
        .verify_password(password.expose_secret().as_bytes(), phc.as_str())
        .is_ok();
    known && matches
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hasher()
            .hash_password(b"no user has this password: it only burns the same time")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// How long a request waits for a free hashing slot before it is told to come back later.
const HASH_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `job` on the blocking pool holding one of the gateway's hashing slots. The slot moves into
/// the job, so a client that gives up does not free it while the hash is still being computed.
async fn bounded<T: Send + 'static>(
    state: &AppState,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let permit =
        match tokio::time::timeout(HASH_QUEUE_TIMEOUT, state.hashing.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(ApiError::Rejected {
                    status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    detail: "Too many sign-ins at once; retry in a few seconds.".into(),
                });
            }
        };
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _entered = span.enter();
        job()
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("password hashing task failed: {e}")))
}

/// [`hash`], within the gateway's bound on concurrent hashing.
pub async fn hash_bounded(state: &AppState, password: SecretString) -> Result<String, ApiError> {
    validate(password.expose_secret()).map_err(|e| ApiError::invalid("password", e.to_string()))?;
    bounded(state, move || {
        hasher()
            .hash_password(password.expose_secret().as_bytes())
            .map(|h| h.to_string())
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("argon2 hashing failed")))
    })
    .await?
}

/// [`verify`], within the gateway's bound on concurrent hashing.
pub async fn verify_bounded(
    state: &AppState,
    password: SecretString,
    phc: Option<String>,
) -> Result<bool, ApiError> {
    bounded(state, move || verify_now(&password, phc)).await
}
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_with_argon2id_at_owasp_parameters_and_verifies() {
        let phc = hash(SecretString::from("correct horse battery"))
            .await
            .expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            verify(
                SecretString::from("correct horse battery"),
                Some(phc.clone())
            )
            .await
        );
        assert!(!verify(SecretString::from("wrong horse battery"), Some(phc)).await);
        assert!(!verify(SecretString::from("x"), Some("not a hash".into())).await);
        assert!(!verify(SecretString::from("anything at all"), None).await);
    }

    #[test]
    fn the_most_common_passwords_are_refused_whatever_their_case() {
        assert!(matches!(
            validate("Password123"),
            Err(PasswordError::Common)
        ));
        assert!(matches!(validate("qwertyuiop"), Err(PasswordError::Common)));
        assert!(validate("violet-harbour-engine").is_ok());
    }

    #[test]
    fn length_is_counted_in_characters() {
        assert!(validate("short").is_err());
        assert!(validate("ünïcödé!").is_ok());
        assert!(validate(&"x".repeat(MAX_LENGTH + 1)).is_err());
    }
}

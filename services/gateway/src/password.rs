//! Password hashing with argon2id at OWASP's recommended parameters (19 MiB, 2 passes, 1 lane).
//! Hashing is deliberately slow, so it runs on the blocking pool, never on a request thread.

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use secrecy::{ExposeSecret, SecretString};

pub const MIN_LENGTH: usize = 8;
pub const MAX_LENGTH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be {MIN_LENGTH} to {MAX_LENGTH} characters long")]
    Length,
    #[error("hashing the password failed")]
    Hash,
}

fn hasher() -> Argon2<'static> {
    // Constant, valid parameters: Params::new only fails outside argon2's documented ranges.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks the length rule (counted in characters, not bytes, so non-ASCII passwords are fair).
pub fn validate(password: &str) -> Result<(), PasswordError> {
    let chars = password.chars().count();
    if (MIN_LENGTH..=MAX_LENGTH).contains(&chars) {
        Ok(())
    } else {
        Err(PasswordError::Length)
    }
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
pub async fn verify(password: SecretString, phc: String) -> bool {
    let span = tracing::info_span!("password.verify");
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        hasher()
            .verify_password(password.expose_secret().as_bytes(), phc.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
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
        assert!(verify(SecretString::from("correct horse battery"), phc.clone()).await);
        assert!(!verify(SecretString::from("wrong horse battery"), phc).await);
        assert!(!verify(SecretString::from("x"), "not a hash".into()).await);
    }

    #[test]
    fn length_is_counted_in_characters() {
        assert!(validate("short").is_err());
        assert!(validate("ünïcödé!").is_ok());
        assert!(validate(&"x".repeat(MAX_LENGTH + 1)).is_err());
    }
}

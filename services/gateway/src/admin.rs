//! Creating the first administrator: `leadflow admin create`, or `LEADFLOW_ADMIN_EMAIL` and
//! `LEADFLOW_ADMIN_PASSWORD` at start-up.

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::password::{self, PasswordError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0:?} is not an e-mail address")]
    Email(String),
    #[error("the name must be 1 to 200 characters")]
    Name,
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("saving the admin user failed")]
    Database(#[from] sqlx::Error),
}

/// A validated request to create or reset an admin.
#[derive(Debug, Clone)]
pub struct NewAdmin {
    email: String,
    name: String,
    password: SecretString,
}

impl NewAdmin {
    pub fn parse(email: &str, password: SecretString, name: &str) -> Result<Self, AdminError> {
        let normalized =
            normalize_email(email).ok_or_else(|| AdminError::Email(email.to_owned()))?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(AdminError::Name);
        }
        password::validate(password.expose_secret())?;
        Ok(Self {
            email: normalized,
            name: name.to_owned(),
            password,
        })
    }

    pub fn email(&self) -> &str {
        &self.email
    }
}

/// Creates the admin, or, when the e-mail exists, resets that user's password and makes them an
/// active admin. Returns the user's id.
pub async fn upsert_admin(pool: &PgPool, admin: &NewAdmin) -> Result<Uuid, AdminError> {
    let hash = password::hash(admin.password.clone()).await?;
    let id = sqlx::query_scalar(
        "insert into users (email, name, password_hash, role, active)
         values ($1, $2, $3, 'admin', true)
         on conflict (email) do update
            set password_hash = excluded.password_hash, role = 'admin', active = true
         returning id",
    )
    .bind(&admin.email)
    .bind(&admin.name)
    .bind(&hash)
    .fetch_one(pool)
    .await?;
    Ok(id)
}

/// Trimmed and lower-cased; `None` unless it looks like `local@domain.tld`.
pub fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let valid = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.contains(char::is_whitespace)
        && email.matches('@').count() == 1
        && email.len() <= 254;
    valid.then_some(email)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").as_deref(),
            Some("ada@example.com")
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
        ] {
            assert!(normalize_email(bad).is_none(), "{bad:?}");
        }
    }
}

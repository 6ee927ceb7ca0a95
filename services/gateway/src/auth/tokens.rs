//! Access tokens (short-lived HS256 JWTs, algorithm pinned, `iss`/`aud`/`exp`/`iat`/`sub`/`role`
//! required) and refresh tokens (opaque random strings, stored only as SHA-256).

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::policy::{Actor, Role};

pub const ISSUER: &str = "leadflow";
pub const AUDIENCE: &str = "leadflow-api";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub role: Role,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
}

pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl TokenService {
    pub fn new(secret: &SecretString, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let key = secret.expose_secret().as_bytes();
        // Only HS256 is accepted: a token claiming `none`, RS256 or anything else fails to verify.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    /// A signed access token and its lifetime in seconds.
    pub fn issue_access(&self, user_id: Uuid, role: Role) -> anyhow::Result<(String, u64)> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let ttl = self.access_ttl.as_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user_id,
            role,
            iat: now,
            nbf: now,
            exp: now + i64::try_from(ttl).unwrap_or(i64::MAX / 2),
            jti: Uuid::new_v4(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, ttl))
    }

    /// The caller a valid token names, and when it was issued; `None` for anything forged,
    /// expired or malformed.
    pub fn verify(&self, token: &str) -> Option<(Actor, i64)> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        Some((
            Actor {
                id: data.claims.sub,
                role: data.claims.role,
            },
            data.claims.iat,
        ))
    }
}

/// A new refresh token: what the client keeps, and the hash we store.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&token);
    (token, hash)
}

pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> TokenService {
        TokenService::new(
            &SecretString::from("k".repeat(40)),
            Duration::from_secs(900),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_role() {
        let id = Uuid::new_v4();
        let (token, ttl) = service().issue_access(id, Role::Manager).expect("issue");
        assert_eq!(ttl, 900);
        let (actor, _) = service().verify(&token).expect("valid");
        assert_eq!((actor.id, actor.role), (id, Role::Manager));
    }

    #[test]
    fn another_key_or_a_tampered_token_is_refused() {
        let (token, _) = service()
            .issue_access(Uuid::new_v4(), Role::SalesRep)
            .expect("issue");
        let other = TokenService::new(
            &SecretString::from("z".repeat(40)),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(other.verify(&token).is_none());
        let mut tampered = token.clone();
        tampered.push('x');
        assert!(service().verify(&tampered).is_none());
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_hashed() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(hash_token(&a), hash_a);
        assert_eq!(hash_a.len(), 32);
    }
}

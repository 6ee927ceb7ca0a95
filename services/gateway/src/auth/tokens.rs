//! Access tokens (short-lived HS256 JWTs, see `leadflow_platform::access`) and refresh tokens
//! (opaque random strings, stored only as SHA-256).

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use leadflow_platform::access::{AccessTokens, Verified};
use rand::RngCore as _;
use secrecy::SecretString;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::policy::{Actor, Role};

/// Issues and verifies access tokens with the platform's shared implementation, so the notifier
/// accepts exactly what the gateway does.
pub struct TokenService {
    access: AccessTokens,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl TokenService {
    pub fn new(secret: &SecretString, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        Self {
            access: AccessTokens::new(secret),
            access_ttl,
            refresh_ttl,
        }
    }

    /// A signed access token for the sign-in `session` (its refresh-token family), and its
    /// lifetime in seconds.
    pub fn issue_access(
        &self,
        user_id: Uuid,
        role: Role,
        session: Uuid,
    ) -> anyhow::Result<(String, u64)> {
        let token =
            self.access
                .issue_in_session(user_id, role.as_str(), Some(session), self.access_ttl)?;
        Ok((token, self.access_ttl.as_secs()))
    }

    /// The caller a valid token names, and what the revocation check needs of it; `None` for
    /// anything forged, expired or malformed.
    pub fn verify(&self, token: &str) -> Option<(Actor, Verified)> {
        let verified = self.access.verify(token)?;
        let role = Role::parse(&verified.role)?;
        Some((
            Actor {
                id: verified.user_id,
                role,
            },
            verified,
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
        let (token, ttl) = service()
            .issue_access(id, Role::Manager, Uuid::now_v7())
            .expect("issue");
        assert_eq!(ttl, 900);
        let (actor, _) = service().verify(&token).expect("valid");
        assert_eq!((actor.id, actor.role), (id, Role::Manager));
    }

    #[test]
    fn another_key_or_a_tampered_token_is_refused() {
        let (token, _) = service()
            .issue_access(Uuid::new_v4(), Role::SalesRep, Uuid::now_v7())
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

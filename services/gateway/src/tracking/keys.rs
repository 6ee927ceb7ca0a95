//! Write keys for pixels and beacons, and signed lead tokens for links in e-mails.
//!
//! The tracking path never waits on PostgreSQL: valid key hashes live in memory ([`KeyRing`]),
//! reloaded every few seconds and at once after a change through this gateway.

use std::{collections::HashMap, sync::RwLock, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: Uuid,
    /// Origins allowed to post with this key; empty means any.
    pub allowed_origins: Vec<String>,
}

#[derive(Default)]
pub struct KeyRing {
    keys: RwLock<HashMap<Vec<u8>, KeyInfo>>,
}

impl KeyRing {
    pub fn lookup(&self, key: &str) -> Option<KeyInfo> {
        let hash = hash_key(key);
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned()
    }

    /// Loads the active keys from the database, replacing what is cached.
    pub async fn reload(&self, pool: &PgPool) -> sqlx::Result<()> {
        let rows: Vec<(Vec<u8>, Uuid, Vec<String>)> = sqlx::query_as(
            "select key_hash, id, allowed_origins from tracking_keys where revoked_at is null",
        )
        .fetch_all(pool)
        .await?;
        let keys = rows
            .into_iter()
            .map(|(hash, id, allowed_origins)| {
                (
                    hash,
                    KeyInfo {
                        id,
                        allowed_origins,
                    },
                )
            })
            .collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }
}

/// A new write key: what the admin copies (shown once) and what we store.
pub fn new_key() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("lfwk_{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_key(&key);
    (key, hash)
}

pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Signs and checks lead tokens: `base64url(lead id ‖ HMAC-SHA256(lead id)[..16])`. A token names
/// one lead and cannot be altered to name another without the server's key.
pub struct LeadTokens {
    key: Vec<u8>,
}

impl LeadTokens {
    /// Derived from the JWT secret with its own label, so the two uses never share a key.
    pub fn new(secret: &SecretString) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"leadflow lead tracking tokens v1\0");
        hasher.update(secret.expose_secret().as_bytes());
        Self {
            key: hasher.finalize().to_vec(),
        }
    }

    fn mac(&self, lead: Uuid) -> Vec<u8> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(lead.as_bytes());
        mac.finalize().into_bytes()[..16].to_vec()
    }

    pub fn sign(&self, lead: Uuid) -> String {
        let mut bytes = lead.as_bytes().to_vec();
        bytes.extend(self.mac(lead));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn verify(&self, token: &str) -> Option<Uuid> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        if bytes.len() != 32 {
            return None;
        }
        let lead = Uuid::from_slice(&bytes[..16]).ok()?;
        let expected = self.mac(lead);
        // Constant-time comparison: the check must not leak how many bytes matched.
        let same = expected
            .iter()
            .zip(&bytes[16..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        same.then_some(lead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lead_token_names_its_lead_and_cannot_be_moved_to_another() {
        let tokens = LeadTokens::new(&SecretString::from("s".repeat(40)));
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let token = tokens.sign(a);
        assert_eq!(tokens.verify(&token), Some(a));
        let mut forged = URL_SAFE_NO_PAD.decode(&token).expect("b64");
        forged[..16].copy_from_slice(b.as_bytes());
        assert_eq!(tokens.verify(&URL_SAFE_NO_PAD.encode(forged)), None);
        let other = LeadTokens::new(&SecretString::from("t".repeat(40)));
        assert_eq!(other.verify(&token), None);
        assert_eq!(tokens.verify("garbage"), None);
    }

    #[test]
    fn write_keys_are_random_prefixed_and_stored_hashed() {
        let (key, hash) = new_key();
        assert!(key.starts_with("lfwk_"));
        assert_eq!(hash_key(&key), hash);
        assert_ne!(new_key().0, key);
    }
}

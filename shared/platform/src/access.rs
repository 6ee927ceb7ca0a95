//! Access tokens as every service checks them: short-lived HS256 JWTs (algorithm pinned,
//! `iss`/`aud`/`exp`/`iat`/`nbf`/`sub` required), and the revocation rule that makes a demoted,
//! deactivated or signed-out user lose access now rather than when the token expires. A token
//! names the sign-in it came from (`sid`, the refresh-token family), so signing out ends the
//! access tokens of that sign-in too, not only its refresh token. The gateway
//! issues tokens; the gateway and the notifier verify them with this one implementation.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::{Database, DbError};

pub const ISSUER: &str = "leadflow";
pub const AUDIENCE: &str = "leadflow-api";
/// Shorter secrets make HS256 tokens guessable offline.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    /// `admin`, `manager` or `sales_rep`.
    pub role: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
    /// The sign-in (refresh-token family) the token belongs to; signing out ends it. Absent on
    /// tokens made outside a sign-in (tools, tests), which then live until they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
}

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user_id: Uuid,
    pub role: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// The sign-in it belongs to, if any.
    pub session: Option<Uuid>,
}

pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl AccessTokens {
    pub fn new(secret: &SecretString) -> Self {
        let key = secret.expose_secret().as_bytes();
        // Only HS256 is accepted: a token claiming `none`, RS256 or anything else fails to verify.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
        }
    }

    /// A signed token for `user_id` with `role`, valid for `ttl`, tied to no sign-in.
    pub fn issue(
        &self,
        user_id: Uuid,
        role: &str,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.issue_in_session(user_id, role, None, ttl)
    }

    /// A signed token for `user_id` with `role`, valid for `ttl`, that ends when `session` does.
    pub fn issue_in_session(
        &self,
        user_id: Uuid,
        role: &str,
        session: Option<Uuid>,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user_id,
            role: role.to_owned(),
            iat: now,
            nbf: now,
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            jti: Uuid::new_v4(),
            sid: session,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// `None` for anything forged, expired or malformed.
    pub fn verify(&self, token: &str) -> Option<Verified> {
        // We never write these headers: a token that carries one (a key id to look up, a key or
        // a key URL to trust) was made by someone else, whatever its signature says.
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.kid.is_some()
            || header.jku.is_some()
            || header.jwk.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
        {
            return None;
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        // A token "issued" in the future would outlive a sign-out or a password reset that
        // refuses tokens issued before it; the library checks `exp` and `nbf`, not `iat`.
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if data.claims.iat > now + i64::try_from(self.validation.leeway).unwrap_or(0) {
            return None;
        }
        Some(Verified {
            user_id: data.claims.sub,
            role: data.claims.role,
            issued_at: data.claims.iat,
            session: data.claims.sid,
        })
    }
}

/// The secret, checked to be long enough; `variable` names where it came from in the message.
pub fn checked_secret<'a>(
    secret: Option<&'a SecretString>,
    variable: &str,
) -> anyhow::Result<&'a SecretString> {
    let secret = secret.ok_or_else(|| {
        anyhow::anyhow!(
            "{variable} is not set: set it to at least {MIN_SECRET_BYTES} random bytes (for example `openssl rand -base64 48`), or run `leadflow up`, which generates one"
        )
    })?;
    let len = secret.expose_secret().len();
    anyhow::ensure!(
        len >= MIN_SECRET_BYTES,
        "{variable} is too short: use at least {MIN_SECRET_BYTES} bytes (got {len})"
    );
    Ok(secret)
}

/// How long a user's standing is trusted from memory. Changes made through the same process take
/// effect at once (it calls [`Sessions::forget`]); through another, within this.
pub const STANDING_TTL: Duration = Duration::from_secs(5);
const CAPACITY: usize = 100_000;
/// The longest access-token lifetime the sign-out rule covers: ended sign-ins are looked up this
/// far back (the `24 hours` in [`load`]), so the gateway refuses a longer `ACCESS_TOKEN_TTL`.
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(24 * 3600);
/// Clock difference tolerated between the process that signs a token and the one checking it.
const LEEWAY_SECS: u64 = 5;

#[derive(Debug)]
struct Standing {
    role: Option<String>,
    active: bool,
    /// Unix seconds; tokens issued earlier are refused.
    valid_after: i64,
    /// Sign-ins ended lately (signed out, or revoked after a refresh token was reused).
    ended: Vec<Uuid>,
}

/// Checks tokens against the user's current role, active flag and `sessions_valid_after`, cached
/// per user for [`STANDING_TTL`] so the hot path stays one lookup in memory.
#[derive(Default)]
pub struct Sessions {
    cache: RwLock<HashMap<Uuid, (Instant, Standing)>>,
}

impl Sessions {
    /// Forgets what is cached for `user` (after changing their role, status or password).
    pub fn forget(&self, user: Uuid) {
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&user);
    }

    /// Whether `token` still stands: its user is active, has the same role, has not had every
    /// session ended since it was issued, and has not signed out of the sign-in it belongs to.
    pub async fn still_valid(&self, db: &Database, token: &Verified) -> Result<bool, DbError> {
        let user = token.user_id;
        {
            // The hot path: decided under the read lock, nothing copied.
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            if let Some((at, standing)) = cache.get(&user)
                && at.elapsed() < STANDING_TTL
            {
                return Ok(standing.admits(token));
            }
        }
        let mut conn = db.acquire().await?;
        let standing = load(&mut conn, user).await?;
        let admits = standing.admits(token);
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CAPACITY {
            cache.clear();
        }
        cache.insert(user, (Instant::now(), standing));
        Ok(admits)
    }
}

impl Standing {
    fn admits(&self, token: &Verified) -> bool {
        self.active
            && self.role.as_deref() == Some(token.role.as_str())
            && token.issued_at >= self.valid_after
            && token.session.is_none_or(|s| !self.ended.contains(&s))
    }
}

async fn load(conn: &mut PgConnection, user: Uuid) -> sqlx::Result<Standing> {
    // A sign-in has ended when its latest refresh token was revoked without being replaced
    // (rotation replaces, sign-out and reuse detection do not). Older ones need not be listed:
    // every access token of theirs has expired. One round trip, on the partial index of
    // not-replaced tokens (migration 20261126000010). The notifier's ticket redemption
    // (`services/notifier/src/auth.rs`) applies the same rule in its statement: change both.
    let row: Option<(String, bool, i64, Vec<Uuid>)> = sqlx::query_as(
        "select u.role, u.active, floor(extract(epoch from u.sessions_valid_after))::bigint,
                array(select distinct r.family_id from refresh_tokens r
                      where r.user_id = u.id and r.replaced_by is null
                        and r.revoked_at > now() - make_interval(secs => $2))
         from users u where u.id = $1",
    )
    .bind(user)
    .bind(MAX_ACCESS_TTL.as_secs_f64() + LEEWAY_SECS as f64)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some((role, active, valid_after, ended)) => Standing {
            role: Some(role),
            active,
            valid_after,
            ended,
        },
        None => Standing {
            role: None,
            active: false,
            valid_after: i64::MAX,
            ended: Vec::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(key: &str) -> AccessTokens {
        AccessTokens::new(&SecretString::from(key.repeat(40)))
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_role() {
        let id = Uuid::new_v4();
        let token = tokens("k")
            .issue(id, "manager", Duration::from_secs(900))
            .expect("issue");
        let verified = tokens("k").verify(&token).expect("valid");
        assert_eq!((verified.user_id, verified.role.as_str()), (id, "manager"));
    }

    #[test]
    fn another_key_a_tampered_or_an_expired_token_is_refused() {
        let token = tokens("k")
            .issue(Uuid::new_v4(), "sales_rep", Duration::from_secs(60))
            .expect("issue");
        assert!(tokens("z").verify(&token).is_none());
        let mut tampered = token.clone();
        tampered.push('x');
        assert!(tokens("k").verify(&tampered).is_none());

        let now = OffsetDateTime::now_utc().unix_timestamp();
        let expired = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: Uuid::new_v4(),
            role: "admin".into(),
            iat: now - 120,
            nbf: now - 120,
            exp: now - 60,
            jti: Uuid::new_v4(),
            sid: None,
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &expired,
            &EncodingKey::from_secret("k".repeat(40).as_bytes()),
        )
        .expect("encode");
        assert!(tokens("k").verify(&expired).is_none());
    }

    fn signed(header: Header, iat_offset: i64) -> String {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: Uuid::new_v4(),
            role: "admin".into(),
            iat: now + iat_offset,
            nbf: now,
            exp: now + 600,
            jti: Uuid::new_v4(),
            sid: None,
        };
        let key = EncodingKey::from_secret("k".repeat(40).as_bytes());
        jsonwebtoken::encode(&header, &claims, &key).expect("encode")
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused_even_with_the_right_key() {
        assert!(tokens("k").verify(&signed(Header::default(), 0)).is_some());
        assert!(
            tokens("k").verify(&signed(Header::default(), 3)).is_some(),
            "within leeway"
        );
        assert!(
            tokens("k")
                .verify(&signed(Header::default(), 3600))
                .is_none()
        );
    }

    #[test]
    fn a_token_naming_a_key_we_never_named_is_refused_even_with_the_right_key() {
        let with = |edit: fn(&mut Header)| {
            let mut header = Header::default();
            edit(&mut header);
            tokens("k").verify(&signed(header, 0))
        };
        assert!(with(|h| h.kid = Some("other".into())).is_none());
        assert!(with(|h| h.jku = Some("https://evil.example/jwks".into())).is_none());
        assert!(with(|h| h.x5u = Some("https://evil.example/cert".into())).is_none());
    }

    #[test]
    fn the_sign_in_a_token_belongs_to_travels_in_it() {
        let session = Uuid::now_v7();
        let token = tokens("k")
            .issue_in_session(
                Uuid::new_v4(),
                "manager",
                Some(session),
                Duration::from_secs(60),
            )
            .expect("issue");
        assert_eq!(
            tokens("k").verify(&token).expect("valid").session,
            Some(session)
        );
        let token = tokens("k")
            .issue(Uuid::new_v4(), "manager", Duration::from_secs(60))
            .expect("issue");
        assert_eq!(tokens("k").verify(&token).expect("valid").session, None);
    }

    #[test]
    fn short_or_missing_secrets_are_refused_by_name() {
        let err = checked_secret(None, "JWT_SECRET").expect_err("missing");
        assert!(err.to_string().contains("JWT_SECRET"));
        let short = SecretString::from("hunter2");
        let err = checked_secret(Some(&short), "JWT_SECRET").expect_err("short");
        assert!(err.to_string().contains("too short"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

//! Access tokens carry the role, but a demoted or deactivated user must lose it now, not when
//! the token expires. Each request checks the token against the user's current role, active flag
//! and `sessions_valid_after`, cached per user for a few seconds so the hot path stays one lookup
//! in memory. Changes made through this gateway take effect at once; through another, within [`TTL`].

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use leadflow_platform::db::{Database, DbError};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::policy::{Actor, Role};

pub const TTL: Duration = Duration::from_secs(5);
const CAPACITY: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Standing {
    role: Option<Role>,
    active: bool,
    /// Unix seconds; tokens issued earlier are refused.
    valid_after: i64,
}

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

    fn cached(&self, user: Uuid) -> Option<Standing> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&user)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, s)| *s)
    }

    /// Whether a token for `actor`, issued at `issued_at`, still stands.
    pub async fn still_valid(
        &self,
        db: &Database,
        actor: &Actor,
        issued_at: i64,
    ) -> Result<bool, DbError> {
        let standing = match self.cached(actor.id) {
            Some(standing) => standing,
            None => {
                let mut conn = db.acquire().await?;
                let standing = load(&mut conn, actor.id).await?;
                let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CAPACITY {
                    cache.clear();
                }
                cache.insert(actor.id, (Instant::now(), standing));
                standing
            }
        };
        Ok(standing.active
            && standing.role == Some(actor.role)
            && issued_at >= standing.valid_after)
    }
}

async fn load(conn: &mut PgConnection, user: Uuid) -> sqlx::Result<Standing> {
    let row: Option<(String, bool, i64)> = sqlx::query_as(
        "select role, active, floor(extract(epoch from sessions_valid_after))::bigint from users where id = $1",
    )
    .bind(user)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some((role, active, valid_after)) => Standing {
            role: Role::parse(&role),
            active,
            valid_after,
        },
        None => Standing {
            role: None,
            active: false,
            valid_after: i64::MAX,
        },
    })
}

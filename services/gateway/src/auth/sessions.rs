//! Access tokens carry the role, but a demoted or deactivated user must lose it now, not when
//! the token expires. The rule lives in `leadflow_platform::access::Sessions`, shared with the
//! notifier; this adapts it to the gateway's [`Actor`].

use leadflow_platform::db::{Database, DbError};

use crate::policy::Actor;

#[derive(Default)]
pub struct Sessions(leadflow_platform::access::Sessions);

impl Sessions {
    /// Forgets what is cached for `user` (after changing their role, status or password).
    pub fn forget(&self, user: uuid::Uuid) {
        self.0.forget(user);
    }

    /// Whether a token for `actor`, issued at `issued_at`, still stands.
    pub async fn still_valid(
        &self,
        db: &Database,
        actor: &Actor,
        issued_at: i64,
    ) -> Result<bool, DbError> {
        self.0
            .still_valid(db, actor.id, actor.role.as_str(), issued_at)
            .await
    }
}

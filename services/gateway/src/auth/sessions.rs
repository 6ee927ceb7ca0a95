//! Access tokens carry the role, but a demoted or deactivated user must lose it now, not when
//! the token expires. The rule lives in `leadflow_platform::access::Sessions`, shared with the
//! notifier.

use leadflow_platform::{
    access::Verified,
    db::{Database, DbError},
};

#[derive(Default)]
pub struct Sessions(leadflow_platform::access::Sessions);

impl Sessions {
    /// Forgets what is cached for `user` (after changing their role, status or password).
    pub fn forget(&self, user: uuid::Uuid) {
        self.0.forget(user);
    }

    /// Whether a verified token still stands (see `leadflow_platform::access::Sessions`).
    pub async fn still_valid(&self, db: &Database, token: &Verified) -> Result<bool, DbError> {
        self.0.still_valid(db, token).await
    }
}

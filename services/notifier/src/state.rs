use std::{ops::Deref, sync::Arc, time::Duration};

use leadflow_platform::{
    Platform,
    access::{AccessTokens, Sessions},
};

use crate::hub::Hub;

/// What every stream handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub platform: Arc<Platform>,
    pub tokens: AccessTokens,
    pub sessions: Sessions,
    pub hub: Arc<Hub>,
    /// Idle streams get a heartbeat this often, so proxies do not cut them.
    pub heartbeat: Duration,
    /// How often an open stream re-checks that its user's access still stands.
    pub recheck: Duration,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

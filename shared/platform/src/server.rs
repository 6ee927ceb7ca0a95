//! The seam every service exposes: build it (binding its listener, possibly on port 0 in tests),
//! read its address, run it until the shutdown token fires.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{
    Platform,
    http::{platform_routes, serve, track_requests},
    long_lived::LongLivedListener,
    problem::route_not_found,
};

pub struct Server {
    listener: TcpListener,
    router: Router,
    platform: Arc<Platform>,
    long_lived: &'static [&'static str],
}

impl Server {
    /// Binds `addr` and assembles the service's `routes` with the platform's health and metrics
    /// routes, request ids, a tracing span per request, request metrics and a JSON 404.
    pub async fn bind(
        platform: Arc<Platform>,
        addr: SocketAddr,
        routes: Router,
        addr_variable: &str,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} ({addr_variable})"))?;
        let router = routes
            .merge(platform_routes(platform.clone()))
            .fallback(route_not_found);
        let router = track_requests(router, platform.metrics.clone())
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id)
            }))
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
        Ok(Self {
            listener,
            router,
            platform,
            long_lived: &[],
        })
    }

    /// `GET` requests for `paths` (streams that stay open) are served one per connection by
    /// [`LongLivedListener`], without hyper's buffers; everything else as before.
    pub fn long_lived(mut self, paths: &'static [&'static str]) -> Self {
        self.long_lived = paths;
        self
    }

    /// Wraps the whole router (platform routes included) in `outer`, e.g. security headers.
    pub fn map_router(mut self, outer: impl FnOnce(Router) -> Router) -> Self {
        self.router = outer(self.router);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn platform(&self) -> &Arc<Platform> {
        &self.platform
    }

    /// Serves until the platform's shutdown token is cancelled; then in-flight requests finish,
    /// background tasks finish what they hold, NATS is flushed and the pool closed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let token = self.platform.shutdown_token();
        let platform = self.platform.clone();
        let grace = move || platform.shutdown_time_left();
        let served = if self.long_lived.is_empty() {
            serve(self.listener, self.router, token, grace).await
        } else {
            let streams = TaskTracker::new();
            let served = match LongLivedListener::start(
                self.listener,
                self.long_lived,
                self.router.clone(),
                token.clone(),
                streams.clone(),
            ) {
                Ok(listener) => serve(listener, self.router, token, grace).await,
                Err(e) => Err(e),
            };
            // Streams end with the shutdown token; their last writes get what is left of the grace.
            streams.close();
            let left = self.platform.shutdown_time_left();
            if tokio::time::timeout(left, streams.wait()).await.is_err() {
                tracing::warn!("open streams did not finish within the shutdown timeout");
            }
            served
        };
        self.platform.close().await;
        tracing::info!(service = self.platform.service, "stopped");
        served.context("serving HTTP")
    }
}

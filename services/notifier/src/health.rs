//! Keeps the queue gauges and the notifier's `/health.json` sections current, and clears out
//! expired stream tickets.

use std::sync::Arc;

use leadflow_platform::Platform;
use serde_json::json;

use crate::{metrics::NotifierMetrics, webhooks};

pub async fn refresh(platform: Arc<Platform>, metrics: NotifierMetrics) {
    let token = platform.shutdown_token();
    let mut tickets_cleared: Option<std::time::Instant> = None;
    loop {
        let depth = match platform.db.pool().acquire().await {
            Ok(mut conn) => webhooks::queue_depth(&mut conn).await.ok(),
            Err(_) => None,
        };
        // Spent and stale stream tickets, once a minute; the gateway also drops a user's own
        // when issuing one.
        if tickets_cleared.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(60)) {
            let _ = sqlx::query(
                "delete from stream_tickets where expires_at < now() - interval '1 hour'",
            )
            .execute(platform.db.pool())
            .await;
            tickets_cleared = Some(std::time::Instant::now());
        }
        let mail = match platform.db.pool().acquire().await {
            Ok(mut conn) => crate::email::queue_depth(&mut conn).await.ok(),
            Err(_) => None,
        };
        if let Some(pending) = mail {
            metrics.email_queue.set(pending);
            platform.set_health_section("email_queue", json!({"pending": pending}));
        }
        match depth {
            Some((pending, disabled)) => {
                metrics.webhook_queue.set(pending);
                platform.set_health_section(
                    "webhooks",
                    json!({"pending": pending, "disabled_endpoints": disabled}),
                );
            }
            None => platform.set_health_section(
                "webhooks",
                json!({"pending": null, "error": "the database is unavailable"}),
            ),
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(platform.config.health_probe_interval) => {}
        }
    }
}

//! Outgoing webhook delivery. Deliveries are rows (`webhook_deliveries`), queued in the same
//! transaction as the notifications, so they survive restarts; a worker claims the due ones with
//! `SKIP LOCKED` and a lease (so several notifier processes never send one twice at once), signs
//! each request the Standard Webhooks way, logs every attempt, and schedules retries with
//! exponential backoff and jitter. An endpoint that has failed without a success for
//! `WEBHOOK_DISABLE_AFTER` is disabled, and the admin who registered it is notified.

use std::{sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac as _};
use leadflow_platform::Platform;
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::PgConnection;
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{hub, metrics::NotifierMetrics, store};

#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// How long one webhook request may take before it counts as failed.
    #[arg(long, env = "WEBHOOK_TIMEOUT", default_value = "10s", value_parser = leadflow_platform::config::parse_duration)]
    pub webhook_timeout: Duration,
    /// Delay before the first retry; each further retry waits twice as long (with jitter), up to an hour.
    #[arg(long, env = "WEBHOOK_RETRY_BASE", default_value = "5s", value_parser = leadflow_platform::config::parse_duration)]
    pub webhook_retry_base: Duration,
    /// Attempts per delivery before it is marked failed.
    #[arg(long, env = "WEBHOOK_MAX_ATTEMPTS", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(1..=100))]
    pub webhook_max_attempts: i32,
    /// An endpoint failing with no success for this long (and at least 3 times in a row) is disabled.
    #[arg(long, env = "WEBHOOK_DISABLE_AFTER", default_value = "24h", value_parser = leadflow_platform::config::parse_duration)]
    pub webhook_disable_after: Duration,
    /// Let webhooks reach loopback, private and link-local addresses (off: only public ones).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
}

const BATCH: i64 = 32;
/// How long a claimed delivery is reserved for the process that claimed it; a crash mid-send
/// makes it due again after this.
const LEASE: Duration = Duration::from_secs(120);

/// How long a claimed batch is reserved: deliveries go out one after another, so long enough for
/// a whole batch of timeouts, or another notifier would claim (and send) its last ones meanwhile.
/// `https://hooks.example.com/...` → `hooks.example.com`.
fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

fn lease(timeout: Duration) -> Duration {
    LEASE.max(timeout * (BATCH as u32 + 1))
}
const POLL: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
const MIN_FAILURES_TO_DISABLE: i32 = 3;

pub struct Deliverer {
    pub platform: Arc<Platform>,
    pub metrics: NotifierMetrics,
    pub settings: WebhookArgs,
    pub http: reqwest::Client,
    /// Woken when this process queued deliveries, so they go out without waiting for the poll.
    pub wake: Arc<Notify>,
    /// Set when `SMTP_URL` is: the owner of a disabled webhook is e-mailed too.
    pub email_queued: Option<Arc<Notify>>,
}

/// The HTTP client for webhooks: no redirects (a 3xx is a failure to fix, not to follow).
pub fn client(timeout: Duration, allow_private: bool) -> reqwest::Result<reqwest::Client> {
    let builder = if allow_private {
        reqwest::Client::builder()
    } else {
        reqwest::Client::builder().dns_resolver(std::sync::Arc::new(crate::egress::PublicOnly))
    };
    builder
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("leadflow-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Queues `payload` for every active webhook that wants `event_type`; returns how many.
pub async fn enqueue(
    conn: &mut PgConnection,
    event_id: Uuid,
    event_type: &str,
    payload: &Value,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "insert into webhook_deliveries (webhook_id, event_id, event_type, payload)
         select id, $1, $2, $3 from webhooks
         where active and (cardinality(event_types) = 0 or $2 = any(event_types))
         on conflict on constraint webhook_deliveries_once do nothing",
    )
    .bind(event_id)
    .bind(event_type)
    .bind(payload)
    .execute(conn)
    .await?
    .rows_affected())
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with the key inside a `whsec_` secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Exponential from `base`, capped, with jitter in its upper half so retries of many
/// deliveries do not arrive in lock-step.
pub fn backoff(base: Duration, attempts: i32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempts.clamp(1, 20).saturating_sub(1));
    let capped = exp.min(MAX_BACKOFF).as_millis() as u64;
    Duration::from_millis(rand::random_range(capped / 2..=capped.max(1)))
}

struct Due {
    id: Uuid,
    webhook_id: Uuid,
    payload: Value,
    attempts: i32,
    url: String,
    secret: String,
}

enum Outcome {
    Delivered(u16),
    Failed { status: Option<u16>, error: String },
}

impl Deliverer {
    /// Sends due deliveries until shutdown; the batch in hand is finished first.
    pub async fn run(self: Arc<Self>) {
        let token = self.platform.shutdown_token();
        loop {
            let sent = match self.claim().await {
                Ok(due) => {
                    let n = due.len();
                    futures::future::join_all(due.into_iter().map(|d| self.deliver(d))).await;
                    n
                }
                Err(e) => {
                    tracing::warn!(error = %leadflow_platform::error_chain(&e), "claiming webhook deliveries failed");
                    0
                }
            };
            if sent as i64 == BATCH {
                continue;
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn claim(&self) -> sqlx::Result<Vec<Due>> {
        let rows: Vec<(Uuid, Uuid, Value, i32, String, String)> = sqlx::query_as(
            "with due as (
                 select d.id from webhook_deliveries d join webhooks w on w.id = d.webhook_id
                 where d.status = 'pending' and d.next_attempt_at <= now() and w.active
                 order by d.next_attempt_at limit $1
                 for update of d skip locked)
             update webhook_deliveries d set next_attempt_at = now() + make_interval(secs => $2)
             from due, webhooks w
             where d.id = due.id and w.id = d.webhook_id
             returning d.id, d.webhook_id, d.payload, d.attempts, w.url, w.secret",
        )
        .bind(BATCH)
        .bind(lease(self.settings.webhook_timeout).as_secs_f64())
        .fetch_all(self.platform.db.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, webhook_id, payload, attempts, url, secret)| Due {
                id,
                webhook_id,
                payload,
                attempts,
                url,
                secret,
            })
            .collect())
    }

    async fn deliver(&self, due: Due) {
        let started = std::time::Instant::now();
        let outcome = self.send(&due).await;
        let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let (label, outcome_text) = match &outcome {
            Outcome::Delivered(_) => ("succeeded", None),
            Outcome::Failed { error, .. } => ("failed", Some(error.clone())),
        };
        self.metrics
            .delivered
            .with_label_values(&["webhook", label])
            .inc();
        if let Err(e) = self.record(&due, &outcome, duration_ms).await {
            // The lease runs out and the delivery is tried again: at least once, never lost.
            tracing::warn!(error = %leadflow_platform::error_chain(&e), delivery = %due.id, "recording a webhook attempt failed");
        } else if let Some(error) = outcome_text {
            tracing::info!(delivery = %due.id, webhook = %due.webhook_id, attempt = due.attempts + 1, %error, "webhook attempt failed");
        }
    }

    async fn send(&self, due: &Due) -> Outcome {
        let body = due.payload.to_string();
        let msg_id = format!("msg_{}", due.id.simple());
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        if let Some(error) = (!self.settings.webhook_allow_private)
            .then(|| crate::egress::refusal(&due.url))
            .flatten()
        {
            return Outcome::Failed {
                status: None,
                error,
            };
        }
        let Some(signature) = sign(&due.secret, &msg_id, timestamp, &body) else {
            return Outcome::Failed {
                status: None,
                error: "the webhook secret is not a valid whsec_ secret".into(),
            };
        };
        let response = self
            .http
            .post(&due.url)
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => Outcome::Delivered(r.status().as_u16()),
            Ok(r) => Outcome::Failed {
                status: Some(r.status().as_u16()),
                error: format!("the endpoint answered {}", r.status()),
            },
            // Without the URL: it may carry a token of the receiver's.
            Err(e) => Outcome::Failed {
                status: None,
                error: leadflow_platform::error_chain(&e.without_url()),
            },
        }
    }

    async fn record(&self, due: &Due, outcome: &Outcome, duration_ms: i32) -> sqlx::Result<()> {
        let attempt = due.attempts + 1;
        let mut tx = self.platform.db.pool().begin().await?;
        let (status, error) = match outcome {
            Outcome::Delivered(code) => (Some(i32::from(*code)), None),
            Outcome::Failed { status, error } => (status.map(i32::from), Some(error.as_str())),
        };
        sqlx::query(
            "insert into webhook_attempts (delivery_id, attempt, status_code, error, duration_ms)
             values ($1, $2, $3, $4, $5)",
        )
        .bind(due.id)
        .bind(attempt)
        .bind(status)
        .bind(error)
        .bind(duration_ms)
        .execute(&mut *tx)
        .await?;
        match outcome {
            Outcome::Delivered(_) => {
                sqlx::query(
                    "update webhook_deliveries set status = 'succeeded', attempts = $2,
                         last_status_code = $3, last_error = null where id = $1",
                )
                .bind(due.id)
                .bind(attempt)
                .bind(status)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "update webhooks set consecutive_failures = 0, failing_since = null, last_error = null
                     where id = $1 and (consecutive_failures > 0 or failing_since is not null)",
                )
                .bind(due.webhook_id)
                .execute(&mut *tx)
                .await?;
            }
            Outcome::Failed { .. } => {
                let gave_up = attempt >= self.settings.webhook_max_attempts;
                let retry_in = backoff(self.settings.webhook_retry_base, attempt);
                sqlx::query(
                    "update webhook_deliveries set attempts = $2, last_status_code = $3, last_error = $4,
                         status = case when $5 then 'failed' else 'pending' end,
                         next_attempt_at = now() + make_interval(secs => $6)
                     where id = $1",
                )
                .bind(due.id)
                .bind(attempt)
                .bind(status)
                .bind(error)
                .bind(gave_up)
                .bind(retry_in.as_secs_f64())
                .execute(&mut *tx)
                .await?;
                // Two statements: PostgreSQL applies only one of two updates of a row in one statement.
                sqlx::query(
                    "update webhooks set consecutive_failures = consecutive_failures + 1,
                         failing_since = coalesce(failing_since, now()), last_error = $2
                     where id = $1",
                )
                .bind(due.webhook_id)
                .bind(error)
                .execute(&mut *tx)
                .await?;
                let disabled: Option<(Option<Uuid>, String)> = sqlx::query_as(
                    "update webhooks set active = false, disabled_at = now()
                     where id = $1 and active and consecutive_failures >= $2
                       and failing_since <= now() - make_interval(secs => $3)
                     returning created_by, url",
                )
                .bind(due.webhook_id)
                .bind(MIN_FAILURES_TO_DISABLE)
                .bind(self.settings.webhook_disable_after.as_secs_f64())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((owner, url)) = disabled {
                    tracing::warn!(webhook = %due.webhook_id, "webhook disabled after failing for too long");
                    let told = match owner {
                        Some(owner) => {
                            let planned = crate::recipients::Planned {
                                user_id: owner,
                                kind: "webhook.disabled",
                                // The host only: the rest of the URL may carry the receiver's token.
                                payload: json!({"webhook_id": due.webhook_id, "host": host_of(&url), "last_error": error}),
                            };
                            store::insert(&mut tx, Uuid::now_v7(), &[planned]).await?
                        }
                        None => Vec::new(),
                    };
                    let mut mailed = 0;
                    if self.email_queued.is_some() {
                        let refs: Vec<&store::Notification> = told.iter().collect();
                        mailed = crate::email::enqueue(&mut tx, &refs).await?;
                    }
                    tx.commit().await?;
                    if let (true, Some(wake)) = (mailed > 0, &self.email_queued) {
                        wake.notify_one();
                    }
                    for n in told {
                        let _ = hub::publish(
                            &self.platform,
                            n.user_id,
                            n.to_json(),
                            OffsetDateTime::now_utc(),
                        )
                        .await;
                    }
                    return Ok(());
                }
            }
        }
        tx.commit().await
    }
}

/// Deliveries waiting to be sent (those of disabled webhooks wait for a re-enable and are not
/// counted), and how many webhooks are disabled: the queue-depth gauge and health.
pub async fn queue_depth(conn: &mut PgConnection) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "select (select count(*) from webhook_deliveries d join webhooks w on w.id = d.webhook_id
                 where d.status = 'pending' and w.active),
                (select count(*) from webhooks where not active and disabled_at is not null)",
    )
    .fetch_one(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let signature = sign(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .expect("signs");
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(sign("whsec_!!!", "id", 1, "{}").is_none());
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_and_a_cap() {
        let base = Duration::from_secs(5);
        for attempt in 1..=30 {
            let d = backoff(base, attempt);
            let full = base
                .saturating_mul(1 << (attempt.min(20) - 1) as u32)
                .min(MAX_BACKOFF);
            assert!(d <= full && d >= full / 2, "attempt {attempt}: {d:?}");
        }
    }
}

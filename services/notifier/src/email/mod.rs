//! Notification e-mail through SMTP, when `SMTP_URL` is set. Mail is queued (`email_queue`) in the
//! same transaction as its notification and sent by a worker that retries with backoff, so an SMTP
//! outage delays mail and loses none. Users who turned e-mail off in their preferences get none.

mod compose;

use std::{fmt, str::FromStr, sync::Arc, time::Duration};

use leadflow_platform::Platform;
use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use serde_json::json;
use sqlx::PgConnection;
use tokio::sync::Notify;
use uuid::Uuid;

pub use compose::{Context, Mail, compose, escape};

use crate::{metrics::NotifierMetrics, store::Notification};

#[derive(Debug, Clone, clap::Args)]
pub struct EmailArgs {
    /// SMTP server for notification e-mail: `smtp://host:port` (plain), `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS) or `smtps://user:pass@host:465` (TLS). Unset: no e-mail. The password is never shown.
    #[arg(long, env = "SMTP_URL", hide_env_values = true, value_parser = leadflow_platform::config::SecretParser::<SmtpUrl>::new("SMTP_URL"))]
    pub smtp_url: Option<SmtpUrl>,
    /// The From of notification e-mail.
    #[arg(
        long,
        env = "SMTP_FROM",
        default_value = "leadflow <notifications@leadflow.localhost>"
    )]
    pub smtp_from: Mailbox,
    /// Delay before the first retry of a mail that could not be sent; doubles each time, up to 10 minutes.
    #[arg(long, env = "EMAIL_RETRY_BASE", default_value = "10s", value_parser = leadflow_platform::config::parse_duration)]
    pub email_retry_base: Duration,
    /// How long one SMTP conversation may take.
    #[arg(long, env = "SMTP_TIMEOUT", default_value = "15s", value_parser = leadflow_platform::config::parse_duration)]
    pub smtp_timeout: Duration,
}

/// An SMTP URL whose password never reaches logs, errors or health output.
#[derive(Clone)]
pub struct SmtpUrl(url::Url);

impl SmtpUrl {
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// `scheme://host:port`, without credentials: what health shows.
    pub fn redacted(&self) -> String {
        let mut url = self.0.clone();
        let _ = url.set_password(None);
        let _ = url.set_username("");
        url.set_query(None);
        url.to_string()
    }
}

impl FromStr for SmtpUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        // The message must not echo the value: it may carry a password.
        let url = url::Url::parse(raw.trim()).map_err(|e| {
            format!("expected smtp://host:port or smtps://user:pass@host:port ({e})")
        })?;
        if !matches!(url.scheme(), "smtp" | "smtps") {
            return Err(format!(
                "expected an smtp:// or smtps:// URL, got scheme {:?}",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("expected a host, as in smtp://127.0.0.1:25".into());
        }
        Ok(Self(url))
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Least time between retries of one mail, and most.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Least time a claimed batch stays reserved to the process that claimed it.
const LEASE: Duration = Duration::from_secs(120);
const BATCH: i64 = 20;
const POLL: Duration = Duration::from_millis(500);

/// Queues one e-mail per new notification whose recipient wants e-mail.
pub async fn enqueue(conn: &mut PgConnection, written: &[&Notification]) -> sqlx::Result<u64> {
    if written.is_empty() {
        return Ok(0);
    }
    let users: Vec<Uuid> = written.iter().map(|n| n.user_id).collect();
    let recipients: Vec<(Uuid, String, String)> = sqlx::query_as(
        "select id, email, name from users
         where id = any($1) and active and coalesce((preferences->>'email_notifications')::boolean, true)",
    )
    .bind(&users)
    .fetch_all(&mut *conn)
    .await?;
    let leads: Vec<Uuid> = written
        .iter()
        .filter_map(|n| n.payload.get("lead_id")?.as_str()?.parse().ok())
        .collect();
    let lead_names: Vec<(Uuid, String)> = sqlx::query_as(
        "select id, trim(first_name || ' ' || last_name) from leads where id = any($1)",
    )
    .bind(&leads)
    .fetch_all(&mut *conn)
    .await?;
    let mut queued = 0;
    for n in written {
        let Some((_, email, name)) = recipients.iter().find(|(id, _, _)| *id == n.user_id) else {
            continue;
        };
        let lead_id: Option<Uuid> = n
            .payload
            .get("lead_id")
            .and_then(|v| v.as_str()?.parse().ok());
        let lead_name = lead_id
            .and_then(|id| lead_names.iter().find(|(l, _)| *l == id))
            .map(|(_, name)| name.as_str());
        let mail = compose(
            &n.kind,
            &n.payload,
            &Context {
                recipient_name: name,
                lead_name,
            },
        );
        queued += sqlx::query(
            "insert into email_queue (notification_id, recipient, subject, text_body, html_body)
             values ($1, $2, $3, $4, $5) on conflict on constraint email_queue_once_per_notification do nothing",
        )
        .bind(n.id)
        .bind(email)
        .bind(&mail.subject)
        .bind(&mail.text)
        .bind(&mail.html)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(queued)
}

/// Starts the sender when `SMTP_URL` is set; returns what wakes it (`None`: no e-mail).
pub fn start(
    platform: &Arc<Platform>,
    metrics: &NotifierMetrics,
    args: &EmailArgs,
) -> anyhow::Result<Option<Arc<Notify>>> {
    let Some(url) = &args.smtp_url else {
        platform.set_health_section("smtp", json!({"configured": false}));
        return Ok(None);
    };
    let wake = Arc::new(Notify::new());
    let sender = Sender::new(
        platform.clone(),
        metrics.clone(),
        args,
        url.clone(),
        wake.clone(),
    )?;
    platform.set_health_section(
        "smtp",
        json!({"configured": true, "server": url.redacted(), "status": "unknown"}),
    );
    platform.spawn(Arc::new(sender).run());
    Ok(Some(wake))
}

/// Mail waiting to be sent (not sent, not refused for good).
pub async fn queue_depth(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select count(*) from email_queue where sent_at is null and failed_at is null",
    )
    .fetch_one(conn)
    .await
}

pub struct Sender {
    pub platform: Arc<Platform>,
    pub metrics: NotifierMetrics,
    pub transport: AsyncSmtpTransport<Tokio1Executor>,
    pub from: Mailbox,
    pub url: SmtpUrl,
    pub retry_base: Duration,
    /// How long a claimed batch stays reserved.
    pub lease: Duration,
    pub wake: Arc<Notify>,
}

impl Sender {
    pub fn new(
        platform: Arc<Platform>,
        metrics: NotifierMetrics,
        args: &EmailArgs,
        url: SmtpUrl,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        // lettre's own error would not quote the URL, but keep ours free of it either way.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|e| anyhow::anyhow!("SMTP_URL is not usable: {e}"))?
            .timeout(Some(args.smtp_timeout))
            .build();
        Ok(Self {
            platform,
            metrics,
            transport,
            from: args.smtp_from.clone(),
            url,
            retry_base: args.email_retry_base,
            // A batch is sent one mail after another: reserve it for as long as that can take, so
            // another notifier does not claim (and send) its last mails while they are being sent.
            lease: LEASE.max(args.smtp_timeout * (BATCH as u32 + 1)),
            wake,
        })
    }

    /// Sends due mail until shutdown; the batch in hand is finished first.
    pub async fn run(self: Arc<Self>) {
        let token = self.platform.shutdown_token();
        loop {
            let sent = match self.claim().await {
                Ok(due) => {
                    let n = due.len();
                    for mail in due {
                        self.send(mail).await;
                    }
                    n
                }
                Err(e) => {
                    tracing::warn!(error = %leadflow_platform::error_chain(&e), "claiming queued e-mail failed");
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

    async fn claim(&self) -> sqlx::Result<Vec<Queued>> {
        sqlx::query_as(
            "with due as (
                 select id from email_queue
                 where sent_at is null and failed_at is null and next_attempt_at <= now()
                 order by next_attempt_at limit $1 for update skip locked)
             update email_queue e set next_attempt_at = now() + make_interval(secs => $2)
             from due where e.id = due.id
             returning e.id, e.recipient, e.subject, e.text_body, e.html_body, e.attempts",
        )
        .bind(BATCH)
        .bind(self.lease.as_secs_f64())
        .fetch_all(self.platform.db.pool())
        .await
    }

    async fn send(&self, mail: Queued) {
        let result = match self.message(&mail) {
            Ok(message) => self
                .transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| (refused(&e), leadflow_platform::error_chain(&e))),
            Err(e) => Err((true, e)),
        };
        let pool = self.platform.db.pool();
        let recorded = match &result {
            Ok(()) => {
                self.metrics
                    .delivered
                    .with_label_values(&["email", "sent"])
                    .inc();
                self.set_health(None);
                sqlx::query("update email_queue set sent_at = now(), attempts = attempts + 1, last_error = null where id = $1")
                    .bind(mail.id)
                    .execute(pool)
                    .await
            }
            Err((permanent, error)) => {
                let outcome = if *permanent { "refused" } else { "retry" };
                self.metrics
                    .delivered
                    .with_label_values(&["email", outcome])
                    .inc();
                tracing::warn!(mail = %mail.id, attempt = mail.attempts + 1, permanent, error = %error, "sending e-mail failed");
                if !permanent {
                    self.set_health(Some(error));
                }
                let retry_in =
                    crate::webhooks::backoff(self.retry_base, mail.attempts + 1).min(MAX_BACKOFF);
                sqlx::query(
                    "update email_queue set attempts = attempts + 1, last_error = $2,
                         failed_at = case when $3 then now() end,
                         next_attempt_at = now() + make_interval(secs => $4)
                     where id = $1",
                )
                .bind(mail.id)
                .bind(error)
                .bind(*permanent)
                .bind(retry_in.as_secs_f64())
                .execute(pool)
                .await
            }
        };
        if let Err(e) = recorded {
            // The lease runs out and the mail is tried again: at least once, never lost.
            tracing::warn!(error = %leadflow_platform::error_chain(&e), mail = %mail.id, "recording an e-mail attempt failed");
        }
    }

    fn message(&self, mail: &Queued) -> Result<Message, String> {
        let to: Mailbox = mail
            .recipient
            .parse()
            .map_err(|e| format!("the recipient address is not valid: {e}"))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                mail.text_body.clone(),
                mail.html_body.clone(),
            ))
            .map_err(|e| format!("the message could not be built: {e}"))
    }

    fn set_health(&self, error: Option<&str>) {
        self.platform.set_health_section(
            "smtp",
            json!({
                "configured": true,
                "server": self.url.redacted(),
                "status": if error.is_some() { "failing" } else { "ok" },
                "last_error": error,
            }),
        );
    }
}

#[derive(sqlx::FromRow)]
struct Queued {
    id: Uuid,
    recipient: String,
    subject: String,
    text_body: String,
    html_body: String,
    attempts: i32,
}

/// Whether the server refused this mail for good. Only refusals of the message or its recipient
/// count: a server that wants authentication or TLS first (530, 534, 535, 538) refuses every mail
/// alike, which is a configuration problem to retry through, like an outage.
fn refused(error: &lettre::transport::smtp::Error) -> bool {
    let server_wide = error
        .status()
        .is_some_and(|code| matches!(u16::from(code), 530 | 534 | 535 | 538));
    error.is_permanent() && !server_wide
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smtp_password_is_never_shown() {
        let url: SmtpUrl = "smtps://mailer:s3cr3t-pw@mail.example.com:465"
            .parse()
            .expect("valid");
        assert_eq!(url.redacted(), "smtps://mail.example.com:465");
        assert!(!format!("{url:?}").contains("s3cr3t"));
        let err = "http://mailer:s3cr3t-pw@x"
            .parse::<SmtpUrl>()
            .expect_err("refused");
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}

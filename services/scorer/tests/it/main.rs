//! The scorer against this machine's real PostgreSQL and NATS.

use std::time::Duration;

use clap::Parser as _;
use leadflow_events::{Envelope, Namespace, Stream};
use leadflow_platform::{config::DatabaseUrl, db};
use leadflow_scorer::{
    model::{Running, Signal},
    stored_signals,
};
use leadflow_testkit::{TcpProxy, TestDb, drop_namespace, eventually, nats_url, unique_namespace};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Scorer {
    args: Vec<String>,
    pool: sqlx::PgPool,
    ns: Namespace,
    jetstream: async_nats::jetstream::Context,
    base: String,
    token: CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: TestDb,
}

impl Scorer {
    async fn start() -> Self {
        Self::start_with(|url| url.to_owned()).await
    }

    /// A scorer whose database URL is `scorer_url(test database URL)`, e.g. through a proxy.
    async fn start_with(scorer_url: impl FnOnce(&str) -> String) -> Self {
        leadflow_testkit::show_logs();
        let db = TestDb::empty().await;
        db::migrate(&db.url.parse::<DatabaseUrl>().expect("url"))
            .await
            .expect("migrate");
        let namespace = unique_namespace();
        let args: Vec<String> = [
            "scorer",
            "--scorer-addr",
            "127.0.0.1:0",
            "--database-url",
            &scorer_url(&db.url),
            "--leadflow-namespace",
            &namespace,
            "--health-probe-interval",
            "200ms",
            "--nats-max-deliver",
            "2",
            "--nats-ack-wait",
            "1s",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        let (token, base, running) = launch(&args).await;
        let client = async_nats::connect(nats_url()).await.expect("nats");
        let scorer = Self {
            args,
            pool: sqlx::PgPool::connect(&db.url).await.expect("pool"),
            ns: Namespace::parse(&namespace).expect("ns"),
            jetstream: async_nats::jetstream::new(client),
            base,
            token,
            running,
            _db: db,
        };
        let health = format!("{}/health.json", scorer.base);
        eventually(Duration::from_secs(20), "streams ready", || async {
            let h: serde_json::Value = reqwest::get(&health).await.ok()?.json().await.ok()?;
            (h["nats"]["streams_ready"] == true
                && h["consumers"].as_array().is_some_and(|c| c.len() == 3))
            .then_some(())
        })
        .await;
        scorer
    }

    /// Stops this scorer process (its durable consumers stay on the server).
    async fn halt(&mut self) {
        self.token.cancel();
        (&mut self.running)
            .await
            .expect("task")
            .expect("clean stop");
    }

    async fn resume(&mut self) {
        let (token, base, running) = launch(&self.args).await;
        self.token = token;
        self.base = base;
        self.running = running;
    }

    /// A processor on the test's database with the default model, as a lane runs it.
    fn processor(&self) -> leadflow_scorer::processor::Processor {
        leadflow_scorer::processor::Processor {
            pool: self.pool.clone(),
            config: Default::default(),
        }
    }

    /// Stores `state` as the lead's signals.
    async fn set_signal_state(&self, lead: Uuid, state: &[f64]) {
        sqlx::query("update leads set signal_state = $2 where id = $1")
            .bind(lead)
            .bind(state)
            .execute(&self.pool)
            .await
            .expect("signals");
    }

    async fn lead(&self, interest: &str, budget: f64) -> Uuid {
        sqlx::query_scalar("insert into leads (first_name, email, interest, budget) values ('Test', 't@example.com', $1, $2::float8::numeric) returning id")
            .bind(interest)
            .bind(budget)
            .fetch_one(&self.pool)
            .await
            .expect("lead")
    }

    /// Publishes with `msg_id` as the JetStream de-duplication id (the envelope id normally).
    async fn publish(&self, event: &Envelope, msg_id: &str) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        self.jetstream
            .publish_with_headers(
                self.ns.subject(&event.kind),
                headers,
                event.to_json().into(),
            )
            .await
            .expect("publish")
            .await
            .expect("ack");
    }

    async fn raw(&self, subject: &str, payload: &'static [u8]) {
        self.jetstream
            .publish(self.ns.subject(subject), bytes::Bytes::from_static(payload))
            .await
            .expect("publish")
            .await
            .expect("ack");
    }

    /// Messages kept on the dead-letter stream.
    async fn dead_letters(&self) -> u64 {
        self.jetstream
            .get_stream(self.ns.stream_name(Stream::DeadLetter))
            .await
            .expect("dead-letter stream")
            .get_info()
            .await
            .expect("info")
            .state
            .messages
    }

    /// The scorer's Prometheus exposition.
    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Waits until the engagement consumer has nothing pending or unacknowledged.
    async fn drained(&self) {
        let durable = self.ns.name("scorer_engagement");
        eventually(Duration::from_secs(20), "the consumer to drain", || async {
            let stream = self
                .jetstream
                .get_stream(self.ns.stream_name(Stream::Engagement))
                .await
                .ok()?;
            let info = stream.consumer_info(&durable).await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        })
        .await;
    }

    async fn stop(self) {
        self.token.cancel();
        self.running.await.expect("task").expect("clean stop");
        self.pool.close().await;
        drop_namespace(self.ns.as_str()).await;
    }
}

async fn launch(
    args: &[String],
) -> (
    CancellationToken,
    String,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let config = leadflow_scorer::ScorerConfig::try_parse_from(args).expect("config");
    let token = CancellationToken::new();
    let server = leadflow_scorer::build(config, token.clone())
        .await
        .expect("scorer starts");
    let base = format!("http://{}", server.local_addr());
    (
        token.clone(),
        base,
        tokio::spawn(server.run_until_stopped()),
    )
}

/// A lead's `signal_state` holding `signals` and no others, as a scorer stores it.
fn signal_state(signals: impl IntoIterator<Item = (Signal, Running)>) -> Vec<f64> {
    let mut stored = stored_signals::Signals::default();
    stored.known.extend(signals);
    stored.to_stored()
}

/// The SQLSTATE of a database error.
fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

fn engagement(kind: &str, lead: Uuid, data: serde_json::Value) -> Envelope {
    Envelope::new(format!("engagement.{kind}"), "test")
        .expect("valid")
        .with_lead(lead)
        .with_data(data)
}

#[tokio::test]
async fn engagement_events_score_the_lead_once_however_often_they_arrive() {
    let scorer = Scorer::start().await;
    sqlx::query("insert into inventory_items (name, category, price, quantity) values ('Terrain 4x4', 'suv', 40000, 2)")
        .execute(&scorer.pool)
        .await
        .expect("item");
    let lead = scorer.lead("an suv for the family", 45_000.0).await;
    let batch: Vec<Envelope> = vec![
        engagement(
            "pricing_view",
            lead,
            json!({"properties": {"url": "/pricing"}}),
        ),
        engagement("pricing_view", lead, json!({})),
        engagement("calculator_use", lead, json!({})),
        engagement(
            "form_submit",
            lead,
            json!({"properties": {"message": "Need it ASAP"}}),
        ),
        engagement("test_drive_request", lead, json!({})),
        engagement("email_click", lead, json!({})),
        engagement("email_click", lead, json!({})),
        engagement("page_view", lead, json!({})),
        engagement("page_view", lead, json!({})),
    ];
    for event in &batch {
        scorer.publish(event, &event.id.to_string()).await;
    }
    let _: (i16, String) = eventually(Duration::from_secs(20), "the lead to be scored", || async {
        sqlx::query_as("select score, tier from leads where id = $1 and score is not null")
            .bind(lead)
            .fetch_optional(&scorer.pool)
            .await
            .expect("lead")
    })
    .await;
    scorer.drained().await;
    let (score, tier): (i16, String) =
        sqlx::query_as("select score, tier from leads where id = $1")
            .bind(lead)
            .fetch_one(&scorer.pool)
            .await
            .expect("lead");
    assert!(
        score >= 70,
        "clicks, pricing, calculator, an urgent form, a test drive, stock and budget make it hot: {score}"
    );
    assert_eq!(tier, "hot");
    assert_eq!(
        scorer
            .count("select count(*) from lead_engagement_events")
            .await,
        9
    );
    let history = scorer.count("select count(*) from lead_scores").await;
    let breakdown: serde_json::Value =
        sqlx::query_scalar("select breakdown from lead_scores order by created_at desc limit 1")
            .fetch_one(&scorer.pool)
            .await
            .expect("breakdown");
    assert!(
        breakdown.to_string().contains("test_drive_request"),
        "{breakdown}"
    );
    // The lead names an interest, so the batch read the inventory and found the SUV in stock.
    assert!(
        breakdown.to_string().contains("interest_in_stock"),
        "{breakdown}"
    );
    assert!(
        scorer
            .count("select count(*) from lead_insights where kind = 'opportunity'")
            .await
            >= 1
    );
    // History rows and insights get time-ordered ids (UUID v7), which keep their primary keys'
    // inserts at the index's right edge (docs/benchmarks.md, session 12).
    assert_eq!(
        scorer
            .count("select count(*) from (select id from lead_scores union all select id from lead_insights) r
                    where substr(r.id::text, 15, 1) <> '7'")
            .await,
        0,
        "every id is a UUID v7"
    );

    // Replayed after the de-duplication window (a new Nats-Msg-Id, the same envelope ids).
    for event in &batch {
        scorer.publish(event, &format!("replay-{}", event.id)).await;
    }
    scorer.drained().await;
    assert_eq!(
        scorer
            .count("select count(*) from lead_engagement_events")
            .await,
        9,
        "stored once"
    );
    assert_eq!(
        scorer.count("select count(*) from lead_scores").await,
        history,
        "scored once"
    );
    let (again, _): (i16, String) = sqlx::query_as("select score, tier from leads where id = $1")
        .bind(lead)
        .fetch_one(&scorer.pool)
        .await
        .expect("lead");
    assert_eq!(again, score);

    // The notifier hears about it.
    let stream = scorer
        .jetstream
        .get_stream(scorer.ns.stream_name(Stream::Domain))
        .await
        .expect("domain stream");
    eventually(
        Duration::from_secs(10),
        "scores.updated to be published",
        || async {
            let message = stream
                .get_last_raw_message_by_subject(&scorer.ns.subject("scores.updated"))
                .await
                .ok()?;
            let event = Envelope::from_json(&message.payload).ok()?;
            (event.lead_id == Some(lead) && event.data["new_tier"] == "hot").then_some(())
        },
    )
    .await;
    scorer.stop().await;
}

#[tokio::test]
async fn bots_are_stored_not_scored_and_unknown_leads_are_dropped() {
    let scorer = Scorer::start().await;
    let lead = scorer.lead("sedan", 0.0).await;
    let bot = engagement(
        "email_open",
        lead,
        json!({"suppressed_reason": "mail_privacy_proxy"}),
    );
    let ghost = engagement("pricing_view", Uuid::new_v4(), json!({}));
    scorer.publish(&bot, &bot.id.to_string()).await;
    scorer.publish(&ghost, &ghost.id.to_string()).await;
    scorer.drained().await;
    let stored: Option<String> = sqlx::query_scalar(
        "select suppressed_reason from lead_engagement_events where event_id = $1",
    )
    .bind(bot.id)
    .fetch_one(&scorer.pool)
    .await
    .expect("stored");
    assert_eq!(stored.as_deref(), Some("mail_privacy_proxy"));
    assert_eq!(
        scorer.count("select count(*) from lead_signal_rows").await,
        0,
        "suppressed events never count"
    );
    assert_eq!(
        scorer
            .count("select count(*) from lead_engagement_events")
            .await,
        1,
        "the unknown lead's event is dropped"
    );
    scorer.stop().await;
}

#[tokio::test]
async fn unreadable_messages_are_dead_lettered_and_healthy_traffic_flows_on() {
    let scorer = Scorer::start().await;
    let lead = scorer.lead("ev", 0.0).await;
    scorer.raw("engagement.page_view", b"{not json").await;
    let good = engagement("page_view", lead, json!({}));
    scorer.publish(&good, &good.id.to_string()).await;
    scorer.drained().await;
    assert_eq!(
        scorer
            .count("select count(*) from lead_engagement_events")
            .await,
        1
    );
    let dead = scorer
        .jetstream
        .get_stream(scorer.ns.stream_name(Stream::DeadLetter))
        .await
        .expect("dead letters");
    let message = dead
        .get_last_raw_message_by_subject(&scorer.ns.subject("deadletter.engagement.page_view"))
        .await
        .expect("kept for inspection");
    assert_eq!(message.payload.as_ref(), b"{not json");
    assert_eq!(
        message
            .headers
            .get("Leadflow-Deliveries")
            .map(|v| v.as_str()),
        Some("1"),
        "unreadable: not tried again"
    );
    let metrics = scorer.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leadflow_events_dead_lettered_total") && l.ends_with(" 1")),
        "{metrics}"
    );
    // The healthy event's event-to-score latency was observed (a registered histogram prints its
    // buckets whether or not anything is observed).
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leadflow_event_to_score_seconds_count") && l.ends_with(" 1")),
        "{metrics}"
    );
    // The healthy event was committed in a batch, and the batch timed.
    let batches = metrics
        .lines()
        .find(|l| {
            l.starts_with("leadflow_consumer_batch_duration_seconds_count")
                && l.contains("scorer_engagement")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(batches.is_some_and(|n| n >= 1), "{metrics}");
    scorer.stop().await;
}

#[tokio::test]
async fn lead_changes_and_urgent_notes_rescore_the_lead() {
    let scorer = Scorer::start().await;
    let lead = scorer.lead("truck", 30_000.0).await;
    let created = Envelope::new("leads.created", "gateway")
        .expect("valid")
        .with_lead(lead);
    scorer.publish(&created, &created.id.to_string()).await;
    let first: i16 = eventually(
        Duration::from_secs(20),
        "a score for the new lead",
        || async {
            sqlx::query_scalar("select score from leads where id = $1 and score is not null")
                .bind(lead)
                .fetch_optional(&scorer.pool)
                .await
                .expect("lead")
        },
    )
    .await;
    let note = Envelope::new("notes.created", "gateway")
        .expect("valid")
        .with_lead(lead)
        .with_data(json!({"body": "Customer wants it this week, urgent"}));
    scorer.publish(&note, &note.id.to_string()).await;
    let second: i16 = eventually(
        Duration::from_secs(20),
        "urgency to raise the score",
        || async {
            let score: i16 = sqlx::query_scalar("select score from leads where id = $1")
                .bind(lead)
                .fetch_one(&scorer.pool)
                .await
                .expect("lead");
            (score > first).then_some(score)
        },
    )
    .await;
    assert!(second > first);
    let urgency: (i64,) = sqlx::query_as(
        "select count from lead_signal_rows where lead_id = $1 and signal = 'urgency'",
    )
    .bind(lead)
    .fetch_one(&scorer.pool)
    .await
    .expect("the note's urgency is stored with the lead");
    assert_eq!(urgency, (2,), "\"this week\" and \"urgent\"");
    scorer.stop().await;
}

#[tokio::test]
async fn a_scorer_that_dies_before_acking_loses_nothing_and_counts_nothing_twice() {
    let mut scorer = Scorer::start().await;
    let lead = scorer.lead("ev", 10_000.0).await;
    scorer.halt().await;
    let events: Vec<Envelope> = ["pricing_view", "calculator_use", "page_view", "email_click"]
        .into_iter()
        .map(|kind| engagement(kind, lead, json!({})))
        .collect();
    for event in &events {
        scorer.publish(event, &event.id.to_string()).await;
    }

    // A scorer fetches the four, commits two of them, and dies before acking anything.
    let stream = scorer
        .jetstream
        .get_stream(scorer.ns.stream_name(Stream::Engagement))
        .await
        .expect("stream");
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(&scorer.ns.name("scorer_engagement"))
        .await
        .expect("durable consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(4)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let mut fetched = Vec::new();
    while let Some(message) = futures::StreamExt::next(&mut batch).await {
        fetched.push(Envelope::from_json(&message.expect("message").payload).expect("envelope"));
    }
    assert_eq!(fetched.len(), 4);
    let processor = scorer.processor();
    processor
        .process(&fetched[..2])
        .await
        .expect("first half committed");
    drop(batch);

    // Another scorer takes over once the ack wait passes.
    scorer.resume().await;
    scorer.drained().await;
    assert_eq!(
        scorer
            .count("select count(*) from lead_engagement_events")
            .await,
        4,
        "none lost, none twice"
    );
    let counts: i64 = scorer
        .count("select coalesce(sum(count), 0)::bigint from lead_signal_rows")
        .await;
    assert_eq!(counts, 4, "each event folded into the signals exactly once");
    scorer.stop().await;
}

#[tokio::test]
async fn rescoring_everything_resumes_an_interrupted_run() {
    let scorer = Scorer::start().await;
    sqlx::query(
        "insert into leads (first_name) select 'Lead ' || i from generate_series(1, 450) i",
    )
    .execute(&scorer.pool)
    .await
    .expect("leads");
    let ids: Vec<Uuid> = sqlx::query_scalar("select id from leads order by id")
        .fetch_all(&scorer.pool)
        .await
        .expect("ids");
    // A run that stopped after 200 leads.
    sqlx::query("insert into rescore_runs (model_version, total, done, last_lead_id) values ('v1', 450, 200, $1)")
        .bind(ids[199])
        .execute(&scorer.pool)
        .await
        .expect("run");
    let mut reports = Vec::new();
    let progress =
        leadflow_scorer::rescore_all::rescore_all(&scorer.pool, &Default::default(), |p| {
            reports.push(p.done)
        })
        .await
        .expect("resumed");
    assert!(progress.resumed);
    assert_eq!((progress.done, progress.total), (450, 450));
    assert_eq!(reports, [400, 450], "progress after each chunk");
    assert_eq!(
        scorer.count("select count(*) from lead_scores").await,
        250,
        "only what was left"
    );
    assert_eq!(
        scorer
            .count("select count(*) from rescore_runs where finished_at is null")
            .await,
        0
    );

    let again =
        leadflow_scorer::rescore_all::rescore_all(&scorer.pool, &Default::default(), |_| {})
            .await
            .expect("fresh run");
    assert!(!again.resumed);
    assert_eq!(
        scorer
            .count("select count(*) from leads where score is null")
            .await,
        0
    );
    scorer.stop().await;
}

#[tokio::test]
async fn events_that_change_nothing_a_rep_sees_leave_no_history_but_count_as_activity() {
    let scorer = Scorer::start().await;
    let lead = scorer.lead("truck", 30_000.0).await;
    // Twelve page views reach the page-view cap and the most evidence confidence counts.
    for _ in 0..12 {
        let view = engagement("page_view", lead, json!({}));
        scorer.publish(&view, &view.id.to_string()).await;
    }
    scorer.drained().await;
    let (score, history, activity): (i16, i64, time::OffsetDateTime) = sqlx::query_as(
        "select score, (select count(*) from lead_scores where lead_id = $1), last_activity_at
         from leads where id = $1",
    )
    .bind(lead)
    .fetch_one(&scorer.pool)
    .await
    .expect("lead");
    assert!(history >= 1);

    let view = engagement("page_view", lead, json!({}));
    scorer.publish(&view, &view.id.to_string()).await;
    scorer.drained().await;

    let after: (i16, i64, time::OffsetDateTime) = sqlx::query_as(
        "select score, (select count(*) from lead_scores where lead_id = $1), last_activity_at
         from leads where id = $1",
    )
    .bind(lead)
    .fetch_one(&scorer.pool)
    .await
    .expect("lead");
    assert_eq!((after.0, after.1), (score, history), "no new history row");
    assert!(after.2 > activity, "the view still counts as activity");
    assert_eq!(
        scorer
            .count(&format!(
                "select count(*) from lead_engagement_events where lead_id = '{lead}'"
            ))
            .await,
        13
    );
    scorer.stop().await;
}

/// `updated_at` is when someone last edited the lead, not when it was last scored or clicked.
#[tokio::test]
async fn scoring_a_lead_is_not_an_edit_of_it() {
    let scorer = Scorer::start().await;
    let lead = scorer.lead("truck", 30_000.0).await;
    let updated_at = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (time::OffsetDateTime, Option<time::OffsetDateTime>)>(
            "select updated_at, scored_at from leads where id = $1",
        )
        .bind(lead)
        .fetch_one(&pool)
        .await
        .expect("lead")
    };
    scorer.drained().await;
    let (created, _) = updated_at(scorer.pool.clone()).await;
    for kind in ["pricing_view", "email_click"] {
        let event = engagement(kind, lead, json!({}));
        scorer.publish(&event, &event.id.to_string()).await;
    }
    scorer.drained().await;
    let (after_scoring, scored_at) = updated_at(scorer.pool.clone()).await;
    assert!(
        scored_at.is_some_and(|s| s > created),
        "the events were scored"
    );
    assert_eq!(after_scoring, created, "scoring is not an edit");

    sqlx::query("update leads set company = 'Acme' where id = $1")
        .bind(lead)
        .execute(&scorer.pool)
        .await
        .expect("edit");
    let (after_edit, _) = updated_at(scorer.pool.clone()).await;
    assert!(after_edit > after_scoring, "an edit moves updated_at");
    sqlx::query(
        "update leads set last_activity_at = now(), company = 'Acme Corp', version = version + 1 where id = $1",
    )
    .bind(lead)
    .execute(&scorer.pool)
    .await
    .expect("edit with activity");
    let (after_versioned_edit, _) = updated_at(scorer.pool.clone()).await;
    assert!(
        after_versioned_edit > after_edit,
        "an edit that moves the version moves updated_at, whatever else it changes"
    );
    scorer.stop().await;
}

/// A scorer that starts before its release's migration (a rollout that migrates while the services
/// roll) finds a column missing: it holds the events until the schema arrives, instead of
/// dead-lettering them.
#[tokio::test]
async fn events_wait_for_a_schema_that_lags_behind_the_scorer() {
    let mut scorer = Scorer::start().await;
    let lead = scorer.lead("truck", 30_000.0).await;
    scorer.halt().await;
    sqlx::query("alter table leads rename column signal_state to signal_state_next")
        .execute(&scorer.pool)
        .await
        .expect("the schema of the release before");
    scorer.resume().await;
    let view = engagement("pricing_view", lead, json!({}));
    scorer.publish(&view, &view.id.to_string()).await;
    // Three ack waits at --nats-max-deliver 2: a failed event would have been dead-lettered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(scorer.dead_letters().await, 0, "nothing dead-lettered");
    sqlx::query("alter table leads rename column signal_state_next to signal_state")
        .execute(&scorer.pool)
        .await
        .expect("the migration");
    eventually(
        Duration::from_secs(30),
        "the held event to be scored",
        || async {
            let count: Option<i64> = sqlx::query_scalar(
                "select count from lead_signal_rows where lead_id = $1 and signal = 'pricing_view'",
            )
            .bind(lead)
            .fetch_optional(&scorer.pool)
            .await
            .expect("signals");
            (count == Some(1)).then_some(())
        },
    )
    .await;
    assert_eq!(scorer.dead_letters().await, 0);
    scorer.stop().await;
}

#[tokio::test]
async fn a_database_outage_holds_events_instead_of_dead_lettering_them() {
    let proxy = TcpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], 5432)), true).await;
    let proxied = proxy.addr().to_string();
    let scorer = Scorer::start_with(|url| url.replace("127.0.0.1:5432", &proxied)).await;
    let lead = scorer.lead("truck", 30_000.0).await;

    // Down for several times max_deliver (2) x ack_wait (1 s): each event would have been
    // dead-lettered had the outage counted as failed deliveries.
    proxy.set_up(false).await;
    for _ in 0..3 {
        let view = engagement("pricing_view", lead, json!({}));
        scorer.publish(&view, &view.id.to_string()).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.set_up(true).await;

    eventually(
        Duration::from_secs(30),
        "the held events to be scored",
        || async {
            let stored: i64 = sqlx::query_scalar(
                "select count(*) from lead_engagement_events where lead_id = $1",
            )
            .bind(lead)
            .fetch_one(&scorer.pool)
            .await
            .ok()?;
            (stored == 3).then_some(())
        },
    )
    .await;
    let counted: i64 = sqlx::query_scalar(
        "select count from lead_signal_rows where lead_id = $1 and signal = 'pricing_view'",
    )
    .bind(lead)
    .fetch_one(&scorer.pool)
    .await
    .expect("signal");
    assert_eq!(counted, 3);
    let dead = scorer.dead_letters().await;
    assert_eq!(dead, 0, "nothing dead-lettered");
    scorer.stop().await;
}

/// Also the regression test for pulls that wait: on nats-server 2.9.10 the nacked poison event was
/// lost about one run in ten when a waiting pull expired as its delay ran out (docs/durability.md).
#[tokio::test]
async fn an_event_the_database_refuses_fails_alone_and_the_rest_of_its_batch_is_scored() {
    let scorer = Scorer::start().await;
    let lead = scorer.lead("truck", 30_000.0).await;
    let mut scorer = scorer;
    scorer.halt().await;
    // Longer than the 200 characters the table allows: only PostgreSQL says no.
    let mut poison = Envelope::new("engagement.page_view", "test")
        .expect("valid")
        .with_data(json!({}));
    poison.anonymous_id = Some("a".repeat(300));
    scorer.publish(&poison, &poison.id.to_string()).await;
    for _ in 0..4 {
        let view = engagement("email_click", lead, json!({}));
        scorer.publish(&view, &view.id.to_string()).await;
    }
    scorer.resume().await;

    eventually(
        Duration::from_secs(30),
        "the poison event to be dead-lettered",
        || async { (scorer.dead_letters().await == 1).then_some(()) },
    )
    .await;
    let message = scorer
        .jetstream
        .get_stream(scorer.ns.stream_name(Stream::DeadLetter))
        .await
        .expect("dead letters")
        .get_last_raw_message_by_subject(&scorer.ns.subject("deadletter.engagement.page_view"))
        .await
        .expect("kept for inspection");
    assert_eq!(
        message
            .headers
            .get("Leadflow-Deliveries")
            .map(|v| v.as_str()),
        Some("2"),
        "refused by the database: tried --nats-max-deliver times"
    );
    let stored: i64 =
        sqlx::query_scalar("select count(*) from lead_engagement_events where lead_id = $1")
            .bind(lead)
            .fetch_one(&scorer.pool)
            .await
            .expect("count");
    assert_eq!(stored, 4, "the healthy events of the batch are stored");
    // Counted: dead-lettered once, and failed once a delivery (it failed alone both times; the
    // batch it first came in, and the half with it, are not counted as failures).
    let metrics = scorer.metrics().await;
    let engagement = |name: &str, value: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with(name) && l.contains("scorer_engagement\"") && l.ends_with(value))
    };
    assert!(
        engagement("leadflow_events_dead_lettered_total", " 1"),
        "{metrics}"
    );
    assert!(
        engagement("leadflow_events_failed_total", " 2"),
        "{metrics}"
    );
    scorer.stop().await;
}

#[tokio::test]
async fn a_requested_rescore_waits_for_a_batch_changing_the_same_lead() {
    let scorer = Scorer::start().await;
    let lead = scorer.lead("truck", 30_000.0).await;
    let rescore = |pool: sqlx::PgPool| async move {
        let mut conn = pool.acquire().await.expect("connection");
        leadflow_scorer::processor::rescore(
            &mut conn,
            lead,
            None,
            &leadflow_scorer::model::Config::default(),
        )
        .await
        .expect("rescore")
        .total
    };
    let before = rescore(scorer.pool.clone()).await;

    // A batch in flight: it holds the lead's lock and has folded in a test-drive request.
    let mut batch = scorer.pool.begin().await.expect("tx");
    sqlx::query("select id from leads where id = $1 for no key update")
        .bind(lead)
        .execute(&mut *batch)
        .await
        .expect("lock");
    let state: Vec<f64> = sqlx::query_scalar("select signal_state from leads where id = $1")
        .bind(lead)
        .fetch_one(&mut *batch)
        .await
        .expect("signals");
    let mut signals = stored_signals::parse(&state);
    signals.known.insert(
        Signal::TestDriveRequest,
        Running::first(time::OffsetDateTime::now_utc()),
    );
    sqlx::query("update leads set signal_state = $2 where id = $1")
        .bind(lead)
        .bind(signals.to_stored())
        .execute(&mut *batch)
        .await
        .expect("signal");

    let requested = tokio::spawn(rescore(scorer.pool.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!requested.is_finished(), "the rescore waits for the batch");
    batch.commit().await.expect("commit");
    let during = requested.await.expect("rescore task");
    assert!(
        during > before,
        "it counts what the batch committed: {during} > {before}"
    );
    let recorded: i16 = sqlx::query_scalar("select score from leads where id = $1")
        .bind(lead)
        .fetch_one(&scorer.pool)
        .await
        .expect("score");
    assert_eq!(i32::from(recorded), during);
    scorer.stop().await;
}

/// A batch locks its leads before it reads them. When another transaction is changing a lead
/// (here a lead edit and a signal, as a rescore or another writer might), the batch waits for it and folds its
/// events into what that transaction committed, instead of overwriting it with a score and signals
/// folded from what it read before.
#[tokio::test]
async fn a_batch_waits_for_a_lead_being_changed_and_scores_what_was_committed() {
    let scorer = Scorer::start().await;
    let lead = scorer.lead("truck", 30_000.0).await;
    let processor = std::sync::Arc::new(scorer.processor());

    let mut other = scorer.pool.begin().await.expect("tx");
    let five_views = Running {
        value: 5.0,
        as_of: time::OffsetDateTime::now_utc(),
        count: 5,
    };
    sqlx::query("update leads set budget = 90000, signal_state = $2 where id = $1")
        .bind(lead)
        .bind(signal_state([(Signal::PageView, five_views)]))
        .execute(&mut *other)
        .await
        .expect("change");

    let events = vec![
        engagement("page_view", lead, json!({})),
        engagement("page_view", lead, json!({})),
    ];
    let batch = tokio::spawn({
        let processor = processor.clone();
        async move { processor.process(&events).await }
    });
    eventually(Duration::from_secs(10), "the batch to wait for the lead", || async {
        scorer
            .count("select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'")
            .await
            .eq(&1)
            .then_some(())
    })
    .await;
    other.commit().await.expect("commit");

    let outcome = batch.await.expect("task").expect("batch committed");
    assert_eq!(outcome.stored, 2);
    let (count, budget): (i64, f64) = sqlx::query_as(
        "select s.count, l.budget::float8 from leads l join lead_signal_rows s on s.lead_id = l.id
         where l.id = $1 and s.signal = 'page_view'",
    )
    .bind(lead)
    .fetch_one(&scorer.pool)
    .await
    .expect("lead");
    assert_eq!(
        count, 7,
        "the other transaction's five page views and the batch's two"
    );
    assert_eq!(budget, 90_000.0);
    let (score, history): (i16, i16) = sqlx::query_as(
        "select l.score, s.total from leads l join lead_scores s on s.lead_id = l.id
         where l.id = $1 order by s.created_at desc limit 1",
    )
    .bind(lead)
    .fetch_one(&scorer.pool)
    .await
    .expect("score");
    let fresh = {
        let mut conn = scorer.pool.acquire().await.expect("connection");
        leadflow_scorer::processor::rescore(&mut conn, lead, None, &Default::default())
            .await
            .expect("rescore")
    };
    assert_eq!(
        (i32::from(score), i32::from(history)),
        (fresh.total, fresh.total),
        "the score recorded is the one the committed facts give"
    );
    scorer.stop().await;
}

/// A batch writes each lead's signal array back whole. A stored signal the batch did not touch
/// keeps its value, what it folded in moves, and the numbers past this model's signals (a newer
/// model's) go back as they were.
#[tokio::test]
async fn a_batch_writes_back_the_signals_it_did_not_touch_as_they_were() {
    let scorer = Scorer::start().await;
    let lead = scorer.lead("truck", 30_000.0).await;
    let as_of = time::macros::datetime!(2026-11-26 10:00:00.123456 UTC);
    let drive = Running {
        value: 1.5,
        as_of,
        count: 2,
    };
    let mut state = signal_state([(Signal::TestDriveRequest, drive)]);
    let newer = [4.25, 1_796_292_000_000_000.0, 3.0];
    state.extend(newer);
    scorer.set_signal_state(lead, &state).await;
    let processor = scorer.processor();
    let rows = || async {
        sqlx::query_as::<_, (String, f64, time::OffsetDateTime, i64)>(
            "select signal, value, as_of, count from lead_signal_rows where lead_id = $1 order by signal",
        )
        .bind(lead)
        .fetch_all(&scorer.pool)
        .await
        .expect("rows")
    };

    let events = vec![
        engagement("page_view", lead, json!({})),
        engagement("page_view", lead, json!({})),
    ];
    let outcome = processor.process(&events).await.expect("batch");
    assert_eq!(outcome.stored, 2);
    let after = rows().await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!((after[0].0.as_str(), after[0].3), ("page_view", 2));
    assert_eq!(
        after[1],
        ("test_drive_request".to_owned(), 1.5, as_of, 2),
        "untouched"
    );
    let stored: Vec<f64> = sqlx::query_scalar("select signal_state from leads where id = $1")
        .bind(lead)
        .fetch_one(&scorer.pool)
        .await
        .expect("state");
    assert_eq!(stored.len(), 30, "{stored:?}");
    assert_eq!(&stored[27..], &newer, "a newer model's signal");

    // The next batch folds into what the first one stored.
    processor
        .process(&[engagement("page_view", lead, json!({}))])
        .await
        .expect("batch");
    let after = rows().await;
    assert_eq!((after[0].0.as_str(), after[0].3), ("page_view", 3));
    assert_eq!(after[1].3, 2);
    scorer.stop().await;
}

/// One statement writes a batch's leads: each folded lead gets its own array back (the arrays go as
/// one flat array and bounds), and a lead the batch re-scores without folding anything keeps its.
#[tokio::test]
async fn a_batch_of_several_leads_writes_each_its_own_signals() {
    let scorer = Scorer::start().await;
    let leads = [
        scorer.lead("truck", 30_000.0).await,
        scorer.lead("van", 20_000.0).await,
        scorer.lead("car", 10_000.0).await,
        scorer.lead("bike", 1_000.0).await,
    ];
    // The third lead has signals of its own and is only edited in this batch.
    let clicks = Running {
        value: 2.0,
        as_of: time::macros::datetime!(2026-11-26 10:00:00 UTC),
        count: 4,
    };
    scorer
        .set_signal_state(leads[2], &signal_state([(Signal::EmailClick, clicks)]))
        .await;
    let processor = scorer.processor();
    let edited = Envelope::new(leadflow_events::subjects::LEADS_UPDATED, "test")
        .expect("envelope")
        .with_lead(leads[2]);
    let events = vec![
        engagement("page_view", leads[0], json!({})),
        engagement("pricing_view", leads[1], json!({})),
        engagement("page_view", leads[0], json!({})),
        edited,
        engagement("pricing_view", leads[1], json!({})),
        engagement("email_open", leads[3], json!({})),
        engagement("pricing_view", leads[1], json!({})),
    ];
    processor.process(&events).await.expect("batch");

    let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "select lead_id, signal, count from lead_signal_rows where lead_id = any($1)",
    )
    .bind(&leads[..])
    .fetch_all(&scorer.pool)
    .await
    .expect("rows");
    let mut rows: Vec<(usize, String, i64)> = rows
        .into_iter()
        .map(|(lead, signal, count)| {
            let index = leads.iter().position(|l| *l == lead).expect("one of ours");
            (index, signal, count)
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            (0, "page_view".to_owned(), 2),
            (1, "pricing_view".to_owned(), 3),
            (2, "email_click".to_owned(), 4),
            (3, "email_open".to_owned(), 1),
        ]
    );
    let lengths: Vec<Option<i32>> =
        sqlx::query_scalar("select array_length(signal_state, 1) from leads where id = any($1)")
            .bind(&leads[..])
            .fetch_all(&scorer.pool)
            .await
            .expect("lengths");
    assert_eq!(lengths, vec![Some(27); 4]);
    scorer.stop().await;
}

/// Engagement events and history rows refuse a row naming a lead that does not exist, insights one
/// naming a score that does not exist; all three go with a lead that is deleted; ids do not change. Their foreign keys cost a
/// query per row written, which is why dropping them keeps coming up (docs/benchmarks.md, session
/// 12): whatever replaces them must pass this.
#[tokio::test]
async fn scoring_rows_refer_only_to_what_exists_and_go_with_a_deleted_lead() {
    let scorer = Scorer::start().await;
    let (lead, kept) = (
        scorer.lead("truck", 30_000.0).await,
        scorer.lead("van", 20_000.0).await,
    );
    let processor = scorer.processor();
    let events: Vec<Envelope> = [lead, kept]
        .into_iter()
        .flat_map(|l| (0..3).map(move |_| engagement("pricing_view", l, json!({}))))
        .collect();
    processor.process(&events).await.expect("batch");
    let rows = |lead: Uuid| {
        let pool = scorer.pool.clone();
        async move {
            sqlx::query_as::<_, (i64, i64, i64)>(
                "select (select count(*) from lead_engagement_events where lead_id = $1),
                        (select count(*) from lead_scores where lead_id = $1),
                        (select count(*) from lead_insights i join lead_scores s on s.id = i.score_id where s.lead_id = $1)",
            )
            .bind(lead)
            .fetch_one(&pool)
            .await
            .expect("counts")
        }
    };
    let (events_of_lead, scores_of_lead, insights_of_lead) = rows(lead).await;
    assert_eq!(events_of_lead, 3);
    assert!(
        scores_of_lead >= 1 && insights_of_lead >= 1,
        "scored with insights"
    );
    let kept_before = rows(kept).await;

    let refused = |sql: &'static str| {
        let pool = scorer.pool.clone();
        async move {
            let error = sqlx::query(sql)
                .bind(Uuid::now_v7())
                .execute(&pool)
                .await
                .expect_err("refused");
            assert_eq!(sqlstate(&error).as_deref(), Some("23503"), "{sql}: {error}");
        }
    };
    refused("insert into lead_engagement_events (event_id, lead_id, event_type, occurred_at) values (gen_random_uuid(), $1, 'page_view', now())").await;
    refused("update lead_engagement_events set lead_id = $1").await;
    refused("insert into lead_scores (lead_id, total, engagement, buying_signal, demographic, tier, confidence, confidence_value, model_version)
             values ($1, 10, 0, 0, 0, 'cold', 'low', 0, 'v1')").await;
    refused("insert into lead_insights (lead_id, score_id, kind, text) select lead_id, $1, 'concern', 'x' from lead_scores limit 1").await;
    refused("update leads set id = $1 where first_name = 'Test' and interest = 'truck'").await;
    assert_eq!(
        rows(lead).await,
        (events_of_lead, scores_of_lead, insights_of_lead),
        "nothing refused was written"
    );

    sqlx::query("delete from leads where id = $1")
        .bind(lead)
        .execute(&scorer.pool)
        .await
        .expect("delete");
    assert_eq!(
        rows(lead).await,
        (0, 0, 0),
        "the lead's events, history and insights went with it"
    );
    let orphans: i64 = scorer
        .count("select count(*) from lead_insights i where not exists (select from lead_scores s where s.id = i.score_id)")
        .await;
    assert_eq!(orphans, 0);
    assert_eq!(rows(kept).await, kept_before, "another lead's rows stay");
    scorer.stop().await;
}

/// Migration 14 moves each lead's signals from their own table onto the lead's row (as JSON, and
/// migration 20 into an array of numbers), and a scorer of an earlier release, still running during
/// a rollout, gets a transient error (40001, which its consume loop retries) instead of scoring from
/// no signals or writing where no one reads.
#[tokio::test]
async fn signals_move_onto_their_leads_and_an_older_scorer_is_refused_transiently() {
    let db = TestDb::empty().await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    db::MIGRATOR
        .run_to(20261126000013, &pool)
        .await
        .expect("migrate to 13");
    let leads: Vec<Uuid> = sqlx::query_scalar(
        "insert into leads (first_name, updated_at) select 'L' || i, '2026-01-01Z' from generate_series(1, 3) i returning id",
    )
    .fetch_all(&pool)
    .await
    .expect("leads");
    sqlx::query(
        "insert into lead_signals (lead_id, signal, value, as_of, count)
         values ($1, 'page_view', 2.5, '2026-11-26 10:00:00.123456Z', 3),
                ($1, 'pricing_view', 1, '2026-11-25 08:00:00Z', 1),
                ($2, 'page_view', 0.75, '2026-11-20 12:30:00Z', 2)",
    )
    .bind(leads[0])
    .bind(leads[1])
    .execute(&pool)
    .await
    .expect("signals");

    // Up to migration 19 signals are JSON. Entries no scorer could read (a field of another type
    // or missing) do not stop migration 20: they become signals never seen, as scorers took them.
    db::MIGRATOR
        .run_to(20261206000019, &pool)
        .await
        .expect("migrate to 19");
    sqlx::query(
        r#"update leads set signals = signals || '{"email_open": {"value": "lots", "as_of": "2026-11-20T12:30:00Z", "count": 1},
                                                  "urgency": {"value": 1, "count": 1}}'
           where id = $1"#,
    )
    .bind(leads[1])
    .execute(&pool)
    .await
    .expect("unreadable signals");

    db::migrate(&db.url.parse::<DatabaseUrl>().expect("url"))
        .await
        .expect("migrate");
    let rows: Vec<(Uuid, String, f64, time::OffsetDateTime, i64)> = sqlx::query_as(
        "select lead_id, signal, value, as_of, count from lead_signal_rows order by lead_id = $1 desc, signal",
    )
    .bind(leads[0])
    .fetch_all(&pool)
    .await
    .expect("rows");
    assert_eq!(
        rows,
        vec![
            (
                leads[0],
                "page_view".to_owned(),
                2.5,
                time::macros::datetime!(2026-11-26 10:00:00.123456 UTC),
                3
            ),
            (
                leads[0],
                "pricing_view".to_owned(),
                1.0,
                time::macros::datetime!(2026-11-25 08:00:00 UTC),
                1
            ),
            (
                leads[1],
                "page_view".to_owned(),
                0.75,
                time::macros::datetime!(2026-11-20 12:30:00 UTC),
                2
            ),
        ]
    );
    let untouched: i64 = sqlx::query_scalar(
        "select count(*) from leads where updated_at = '2026-01-01Z' and (id <> $1 or signal_state = '{}')",
    )
    .bind(leads[2])
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(
        untouched, 3,
        "moving signals is not an edit, and a lead without any has none"
    );

    // This release folds a new page view into the moved ones.
    let config = leadflow_scorer::model::Config::default();
    let processor = leadflow_scorer::processor::Processor {
        pool: pool.clone(),
        config,
    };
    let view = engagement("page_view", leads[0], json!({}));
    processor
        .process(std::slice::from_ref(&view))
        .await
        .expect("process");
    let folded: (f64, time::OffsetDateTime, i64) = sqlx::query_as(
        "select value, as_of, count from lead_signal_rows where lead_id = $1 and signal = 'page_view'",
    )
    .bind(leads[0])
    .fetch_one(&pool)
    .await
    .expect("page views");
    let expected = leadflow_scorer::model::Running {
        value: 2.5,
        as_of: time::macros::datetime!(2026-11-26 10:00:00.123456 UTC),
        count: 3,
    }
    .add(view.time, config.half_life_days);
    assert_eq!(folded.2, 4);
    assert!(
        (folded.0 - expected.value).abs() < 1e-9,
        "{folded:?} against {expected:?}"
    );
    assert_eq!(
        folded.1.unix_timestamp_nanos() / 1_000,
        view.time.unix_timestamp_nanos() / 1_000
    );

    // What the earlier release's scorer ran to read a batch's signals.
    let refused = sqlx::query(
        "select s.lead_id, s.signal, s.value, s.as_of, s.count
         from unnest($1::uuid[]) as t(id)
         cross join lateral (select * from lead_signals where lead_id = t.id offset 0) as s",
    )
    .bind(&leads)
    .fetch_all(&pool)
    .await
    .expect_err("refused");
    assert_eq!(sqlstate(&refused).as_deref(), Some("40001"), "{refused}");

    // Migration 20 moved them again, into `signal_state`. What the release before it ran to
    // update a batch's leads (it names `signals`, changed or not) is refused the same way, and
    // changes nothing.
    let before: Vec<f64> = sqlx::query_scalar("select signal_state from leads where id = $1")
        .bind(leads[0])
        .fetch_one(&pool)
        .await
        .expect("state");
    let refused = sqlx::query(
        "update leads l set score = coalesce(t.total, l.score), signals = coalesce(l.signals || t.signals, l.signals)
         from (select * from unnest($1::uuid[], $2::int2[], $3::jsonb[]) as u(id, total, signals)) as t
         where l.id = t.id",
    )
    .bind(&leads[..1])
    .bind([Some(90_i16)])
    .bind([None::<serde_json::Value>])
    .execute(&pool)
    .await
    .expect_err("refused");
    assert_eq!(sqlstate(&refused).as_deref(), Some("40001"), "{refused}");
    let (after, score): (Vec<f64>, Option<i16>) =
        sqlx::query_as("select signal_state, score from leads where id = $1")
            .bind(leads[0])
            .fetch_one(&pool)
            .await
            .expect("state");
    assert_eq!((after, score.filter(|s| *s == 90)), (before, None));
}

/// Visitors' anonymous events and the identify calls that tie them to leads, arriving together:
/// the lanes (`SCORER_WORKERS`) run at once, and every one of those events must end up counted for
/// its lead.
#[tokio::test]
async fn a_visitors_events_and_their_identify_arriving_together_all_count() {
    let scorer = Scorer::start().await;
    let mut pairs = Vec::new();
    for i in 0..8 {
        let lead = scorer.lead("", 0.0).await;
        pairs.push((lead, format!("visitor-{i}-{}", Uuid::new_v4())));
    }
    let anonymous = |visitor: &str| {
        let mut event = Envelope::new("engagement.page_view", "test").expect("valid");
        event.anonymous_id = Some(visitor.to_owned());
        event
    };
    for (lead, visitor) in &pairs {
        for _ in 0..5 {
            let event = anonymous(visitor);
            scorer.publish(&event, &event.id.to_string()).await;
        }
        let mut identify = Envelope::new("engagement.identify", "test")
            .expect("valid")
            .with_lead(*lead);
        identify.anonymous_id = Some(visitor.clone());
        scorer.publish(&identify, &identify.id.to_string()).await;
        let after = anonymous(visitor);
        scorer.publish(&after, &after.id.to_string()).await;
    }
    scorer.drained().await;
    for (lead, visitor) in &pairs {
        let (events, counted): (i64, i64) = sqlx::query_as(
            "select (select count(*) from lead_engagement_events where anonymous_id = $2 and lead_id = $1 and event_type = 'page_view'),
                    coalesce((select count from lead_signal_rows where lead_id = $1 and signal = 'page_view'), 0)",
        )
        .bind(lead)
        .bind(visitor)
        .fetch_one(&scorer.pool)
        .await
        .expect("counts");
        assert_eq!(
            (events, counted),
            (6, 6),
            "{visitor}: all six page views are the lead's"
        );
    }
    assert_eq!(
        scorer
            .count("select count(*) from lead_engagement_events where lead_id is null")
            .await,
        0
    );
    scorer.stop().await;
}

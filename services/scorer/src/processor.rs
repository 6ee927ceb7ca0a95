//! One batch of events in, scores out, in one transaction: events are stored once per id, folded
//! into each lead's running signals, and every lead they touch is re-scored, with its history
//! row, insights and a `scores.updated` event written to the outbox. The caller acks the batch only
//! after this commits, so a crash anywhere means redelivery, and redelivery changes nothing twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use leadflow_events::{Envelope, subjects};
use leadflow_platform::outbox;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{self, Config, Inputs, Running, Score, Signal};

/// Why an event is stored but not scored; `None` for events that count.
pub fn suppression(event: &Envelope) -> Option<String> {
    event
        .data
        .get("suppressed_reason")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Events stored for the first time (redeliveries and duplicates are not counted).
    pub stored: usize,
    /// Events for leads that do not exist (forged or deleted): dropped.
    pub unknown_lead: usize,
    pub rescored: Vec<(Uuid, Score)>,
    /// `time` of each newly stored, scored event, for the event-to-score latency.
    pub scored_event_times: Vec<OffsetDateTime>,
}

pub struct Processor {
    pub pool: PgPool,
    pub config: Config,
}

struct NewEvent {
    id: Uuid,
    lead_id: Option<Uuid>,
    anonymous_id: Option<String>,
    kind: String,
    properties: Value,
    user_agent: Option<String>,
    suppressed: Option<String>,
    occurred_at: OffsetDateTime,
    source: String,
}

impl Processor {
    /// Processes engagement events and domain events (`leads.*`, `notes.created`) together.
    pub async fn process(&self, events: &[Envelope]) -> sqlx::Result<Outcome> {
        let mut tx = self.pool.begin().await?;
        let mut outcome = Outcome::default();
        let mut touched: BTreeMap<Uuid, Option<Uuid>> = BTreeMap::new(); // lead -> trigger event

        // Anonymous visitors already tied to a lead count for it.
        let anonymous: Vec<String> = events
            .iter()
            .filter_map(|e| e.anonymous_id.clone())
            .collect();
        let identities: HashMap<String, Uuid> = if anonymous.is_empty() {
            HashMap::new()
        } else {
            sqlx::query_as::<_, (String, Uuid)>("select anonymous_id, lead_id from anonymous_identities where anonymous_id = any($1)")
                .bind(&anonymous)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect()
        };
        let referenced: Vec<Uuid> = events
            .iter()
            .filter_map(|e| {
                e.lead_id.or_else(|| {
                    e.anonymous_id
                        .as_ref()
                        .and_then(|a| identities.get(a).copied())
                })
            })
            .collect();
        let existing: BTreeSet<Uuid> =
            sqlx::query_scalar("select id from leads where id = any($1) and deleted_at is null")
                .bind(&referenced)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();

        // Identity stitching first, so the rest of the batch already counts for the lead.
        let mut identities = identities;
        for event in events.iter().filter(|e| e.kind == IDENTIFY) {
            let (Some(lead), Some(anonymous)) = (event.lead_id, event.anonymous_id.as_ref()) else {
                continue;
            };
            if !existing.contains(&lead) {
                continue;
            }
            if stitch(&mut tx, lead, anonymous, &self.config).await? {
                touched.insert(lead, Some(event.id));
            }
            identities.insert(anonymous.clone(), lead);
        }

        let mut engagement = Vec::new();
        for event in events {
            let lead = event.lead_id.or_else(|| {
                event
                    .anonymous_id
                    .as_ref()
                    .and_then(|a| identities.get(a).copied())
            });
            if let Some(kind) = event.kind.strip_prefix("engagement.") {
                if lead.is_some_and(|l| !existing.contains(&l))
                    || (lead.is_none() && event.anonymous_id.is_none())
                {
                    outcome.unknown_lead += 1;
                    continue;
                }
                engagement.push(NewEvent {
                    id: event.id,
                    lead_id: lead,
                    anonymous_id: event.anonymous_id.clone(),
                    kind: kind.to_owned(),
                    properties: event
                        .data
                        .get("properties")
                        .cloned()
                        .unwrap_or_else(|| json!({})),
                    user_agent: event
                        .data
                        .get("user_agent")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    suppressed: suppression(event),
                    occurred_at: event.time,
                    source: event.source.clone(),
                });
            } else if event.kind == subjects::NOTES_CREATED {
                // Urgency in a rep's note counts like urgency in a form.
                if let Some(lead) = lead.filter(|l| existing.contains(l)) {
                    let text = event
                        .data
                        .get("body")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let units = model::urgency_words(text);
                    if units > 0 && self.claim(&mut tx, event.id).await? {
                        fold(
                            &mut tx,
                            lead,
                            &[(Signal::Urgency, event.time, units)],
                            &self.config,
                        )
                        .await?;
                        touched.insert(lead, Some(event.id));
                    }
                }
            } else if matches!(
                event.kind.as_str(),
                subjects::LEADS_CREATED | subjects::LEADS_UPDATED
            ) && let Some(lead) = lead.filter(|l| existing.contains(l))
            {
                touched.entry(lead).or_insert(Some(event.id));
            }
        }

        let stored = insert_events(&mut tx, &engagement).await?;
        outcome.stored = stored.len();
        // Fold per lead, in lead order, so concurrent batches lock rows in the same order.
        let mut per_lead: BTreeMap<Uuid, Vec<(Signal, OffsetDateTime, usize)>> = BTreeMap::new();
        for event in engagement.iter().filter(|e| stored.contains(&e.id)) {
            let (Some(lead), None) = (event.lead_id, &event.suppressed) else {
                continue;
            };
            let units = signals_of(&event.kind, &event.properties);
            if units.is_empty() {
                continue;
            }
            outcome.scored_event_times.push(event.occurred_at);
            let entry = per_lead.entry(lead).or_default();
            entry.extend(units.into_iter().map(|(s, n)| (s, event.occurred_at, n)));
            touched.insert(lead, Some(event.id));
        }
        for (lead, units) in &per_lead {
            fold(&mut tx, *lead, units, &self.config).await?;
        }
        for (lead, trigger) in touched {
            let score = rescore(&mut tx, lead, trigger, &self.config).await?;
            outcome.rescored.push((lead, score));
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Records that this (non-engagement) event was handled; false if it already was.
    async fn claim(&self, conn: &mut PgConnection, event_id: Uuid) -> sqlx::Result<bool> {
        let claimed = sqlx::query("insert into processed_events (consumer, event_id) values ('scorer', $1) on conflict do nothing")
            .bind(event_id)
            .execute(conn)
            .await?
            .rows_affected();
        Ok(claimed == 1)
    }
}

/// The event type an identify call publishes: it ties `anonymous_id` to `lead_id`.
pub const IDENTIFY: &str = "engagement.identify";

/// Ties a visitor to a lead and moves their earlier events onto it, folding in what they signal.
/// Idempotent: events already moved are not moved (or counted) again. Returns whether it moved any.
async fn stitch(
    conn: &mut PgConnection,
    lead: Uuid,
    anonymous: &str,
    config: &Config,
) -> sqlx::Result<bool> {
    sqlx::query("insert into anonymous_identities (anonymous_id, lead_id) values ($1, $2) on conflict (anonymous_id) do nothing")
        .bind(anonymous)
        .bind(lead)
        .execute(&mut *conn)
        .await?;
    let moved: Vec<(String, Value, OffsetDateTime, Option<String>)> = sqlx::query_as(
        "update lead_engagement_events set lead_id = $1
         where anonymous_id = $2 and lead_id is null
         returning event_type, properties, occurred_at, suppressed_reason",
    )
    .bind(lead)
    .bind(anonymous)
    .fetch_all(&mut *conn)
    .await?;
    let units: Vec<(Signal, OffsetDateTime, usize)> = moved
        .iter()
        .filter(|(_, _, _, suppressed)| suppressed.is_none())
        .flat_map(|(kind, properties, at, _)| {
            signals_of(kind, properties)
                .into_iter()
                .map(move |(s, n)| (s, *at, n))
        })
        .collect();
    if !units.is_empty() {
        fold(conn, lead, &units, config).await?;
    }
    Ok(!moved.is_empty())
}

/// Which signals an engagement event carries: its type, plus urgency words in free text.
pub fn signals_of(kind: &str, properties: &Value) -> Vec<(Signal, usize)> {
    let mut out = Vec::new();
    if let Some(signal) = Signal::parse(kind).filter(|s| *s != Signal::Urgency) {
        out.push((signal, 1));
    }
    if matches!(kind, "form_submit" | "chat_message") {
        let text: String = properties
            .as_object()
            .map(|o| {
                o.values()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let urgency = model::urgency_words(&text);
        if urgency > 0 {
            out.push((Signal::Urgency, urgency));
        }
    }
    out
}

/// Stores events once per id; returns the ids that were new.
async fn insert_events(
    conn: &mut PgConnection,
    events: &[NewEvent],
) -> sqlx::Result<BTreeSet<Uuid>> {
    if events.is_empty() {
        return Ok(BTreeSet::new());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let leads: Vec<Option<Uuid>> = events.iter().map(|e| e.lead_id).collect();
    let anonymous: Vec<Option<String>> = events.iter().map(|e| e.anonymous_id.clone()).collect();
    let kinds: Vec<String> = events.iter().map(|e| e.kind.clone()).collect();
    let properties: Vec<Value> = events.iter().map(|e| e.properties.clone()).collect();
    let sources: Vec<String> = events.iter().map(|e| e.source.clone()).collect();
    let agents: Vec<Option<String>> = events.iter().map(|e| e.user_agent.clone()).collect();
    let suppressed: Vec<Option<String>> = events.iter().map(|e| e.suppressed.clone()).collect();
    let times: Vec<OffsetDateTime> = events.iter().map(|e| e.occurred_at).collect();
    let stored: Vec<Uuid> = sqlx::query_scalar(
        "insert into lead_engagement_events
            (event_id, lead_id, anonymous_id, event_type, properties, source, user_agent, suppressed_reason, occurred_at)
         select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::text[], $8::text[], $9::timestamptz[])
         order by 2, 1
         on conflict (event_id) do nothing
         returning event_id",
    )
    .bind(&ids)
    .bind(&leads)
    .bind(&anonymous)
    .bind(&kinds)
    .bind(&properties)
    .bind(&sources)
    .bind(&agents)
    .bind(&suppressed)
    .bind(&times)
    .fetch_all(conn)
    .await?;
    Ok(stored.into_iter().collect())
}

/// Folds events into the lead's running signals (row-locked for the transaction).
async fn fold(
    conn: &mut PgConnection,
    lead: Uuid,
    units: &[(Signal, OffsetDateTime, usize)],
    config: &Config,
) -> sqlx::Result<()> {
    let current: Vec<(String, f64, OffsetDateTime, i64)> =
        sqlx::query_as("select signal, value, as_of, count from lead_signals where lead_id = $1 order by signal for update")
            .bind(lead)
            .fetch_all(&mut *conn)
            .await?;
    let mut running: BTreeMap<Signal, Running> = current
        .into_iter()
        .filter_map(|(signal, value, as_of, count)| {
            Signal::parse(&signal).map(|s| {
                (
                    s,
                    Running {
                        value,
                        as_of,
                        count,
                    },
                )
            })
        })
        .collect();
    let mut latest: Option<OffsetDateTime> = None;
    for (signal, at, n) in units {
        for _ in 0..*n {
            let next = match running.get(signal) {
                Some(r) => r.add(*at, config.half_life_days),
                None => Running::first(*at),
            };
            running.insert(*signal, next);
        }
        latest = latest.max(Some(*at));
    }
    for (signal, r) in &running {
        sqlx::query(
            "insert into lead_signals (lead_id, signal, value, as_of, count) values ($1, $2, $3, $4, $5)
             on conflict (lead_id, signal) do update set value = excluded.value, as_of = excluded.as_of, count = excluded.count",
        )
        .bind(lead)
        .bind(signal.as_str())
        .bind(r.value)
        .bind(r.as_of)
        .bind(r.count)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("update leads set last_activity_at = greatest(last_activity_at, $2) where id = $1")
        .bind(lead)
        .bind(latest)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct LeadFacts {
    email: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    budget: Option<f64>,
    interest: Option<String>,
    timeline: Option<String>,
    repeat_customer: bool,
    last_activity_at: Option<OffsetDateTime>,
    owner_id: Option<Uuid>,
    score: Option<i32>,
    tier: Option<String>,
}

/// Everything the model needs about `lead`, from its row, its running signals and the inventory.
async fn inputs(conn: &mut PgConnection, lead: Uuid) -> sqlx::Result<Option<(Inputs, LeadFacts)>> {
    let Some(facts): Option<LeadFacts> = sqlx::query_as(
        "select email, phone, company, budget::float8 as budget, interest, timeline, repeat_customer, last_activity_at,
                owner_id, score::int4 as score, tier
         from leads where id = $1 and deleted_at is null",
    )
    .bind(lead)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let signals: Vec<(String, f64, OffsetDateTime, i64)> =
        sqlx::query_as("select signal, value, as_of, count from lead_signals where lead_id = $1")
            .bind(lead)
            .fetch_all(&mut *conn)
            .await?;
    let matching_prices: Vec<f64> = match facts.interest.as_deref().filter(|i| !i.trim().is_empty()) {
        Some(interest) => sqlx::query_scalar(
            "select price::float8 from inventory_items
             where active and quantity > 0
               and (position(lower(category) in lower($1)) > 0 or position(lower(name) in lower($1)) > 0)",
        )
        .bind(interest)
        .fetch_all(&mut *conn)
        .await?,
        None => Vec::new(),
    };
    let inputs = Inputs {
        signals: signals
            .into_iter()
            .filter_map(|(signal, value, as_of, count)| {
                Signal::parse(&signal).map(|s| {
                    (
                        s,
                        Running {
                            value,
                            as_of,
                            count,
                        },
                    )
                })
            })
            .collect(),
        last_activity_at: facts.last_activity_at,
        budget: facts.budget,
        interest: facts.interest.clone(),
        timeline: facts.timeline.clone(),
        has_email: facts.email.is_some(),
        has_phone: facts.phone.is_some(),
        has_company: facts.company.is_some(),
        repeat_customer: facts.repeat_customer,
        matching_prices,
    };
    Ok(Some((inputs, facts)))
}

/// Scores `lead` now and records it: history row (once per trigger event), insights, the lead's
/// current score, and `scores.updated` for the notifier.
pub async fn rescore(
    conn: &mut PgConnection,
    lead: Uuid,
    trigger: Option<Uuid>,
    config: &Config,
) -> sqlx::Result<Score> {
    let Some((inputs, facts)) = inputs(conn, lead).await? else {
        return Ok(model::score(
            &Inputs::default(),
            OffsetDateTime::now_utc(),
            config,
        ));
    };
    let score = model::score(&inputs, OffsetDateTime::now_utc(), config);
    let breakdown = serde_json::to_value(&score.breakdown).unwrap_or_default();
    let score_id: Option<Uuid> = sqlx::query_scalar(
        "insert into lead_scores (lead_id, total, engagement, buying_signal, demographic, tier, confidence,
                                  confidence_value, breakdown, model_version, trigger_event_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (lead_id, trigger_event_id) where trigger_event_id is not null do nothing
         returning id",
    )
    .bind(lead)
    .bind(score.total as i16)
    .bind(score.engagement as f32)
    .bind(score.buying_signal as f32)
    .bind(score.demographic as f32)
    .bind(score.tier.as_str())
    .bind(score.confidence.as_str())
    .bind(score.confidence_value as f32)
    .bind(&breakdown)
    .bind(score.model_version)
    .bind(trigger)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(score_id) = score_id else {
        return Ok(score); // this trigger was scored already (redelivery)
    };
    for insight in &score.insights {
        sqlx::query("insert into lead_insights (lead_id, score_id, kind, text, score) values ($1, $2, $3, $4, $5)")
            .bind(lead)
            .bind(score_id)
            .bind(serde_json::to_value(insight.kind).ok().and_then(|v| v.as_str().map(str::to_owned)))
            .bind(&insight.text)
            .bind(insight.score as f32)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(
        "update leads set score = $2, tier = $3, confidence = $4, confidence_value = $5, scored_at = now() where id = $1",
    )
    .bind(lead)
    .bind(score.total as i16)
    .bind(score.tier.as_str())
    .bind(score.confidence.as_str())
    .bind(score.confidence_value as f32)
    .execute(&mut *conn)
    .await?;
    let event = Envelope::new(subjects::SCORES_UPDATED, "scorer")
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?
        .with_lead(lead)
        .with_data(json!({
            "score_id": score_id,
            "owner_id": facts.owner_id,
            "old_score": facts.score,
            "new_score": score.total,
            "old_tier": facts.tier,
            "new_tier": score.tier.as_str(),
            "trigger_event_id": trigger,
        }))
        .with_traceparent(leadflow_platform::telemetry::current_traceparent());
    outbox::enqueue(conn, &event).await?;
    Ok(score)
}

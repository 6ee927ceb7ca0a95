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

use crate::{
    model::{self, Config, Inputs, Running, Score, Signal},
    stored_signals,
};

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
        // Every lead's new signal units, folded together once below, in lead order.
        let mut per_lead: BTreeMap<Uuid, Vec<Unit>> = BTreeMap::new();

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
        // Every lead the batch names, locked and read at once: whether it exists, and the facts
        // its score needs.
        let facts = lock_and_read(&mut tx, &referenced).await?;
        let existing: BTreeSet<Uuid> = facts.iter().filter(|f| f.live).map(|f| f.id).collect();

        // Identity stitching first, so the rest of the batch already counts for the lead.
        let mut identities = identities;
        for event in events.iter().filter(|e| e.kind == IDENTIFY) {
            let (Some(lead), Some(anonymous)) = (event.lead_id, event.anonymous_id.as_ref()) else {
                continue;
            };
            if !existing.contains(&lead) {
                continue;
            }
            if let Some(units) = stitch(&mut tx, lead, anonymous).await? {
                per_lead.entry(lead).or_default().extend(units);
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
                        per_lead.entry(lead).or_default().push((
                            Signal::Urgency,
                            event.time,
                            units,
                        ));
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
        let targets: Vec<(Uuid, Option<Uuid>)> = touched.into_iter().collect();
        let folded = fold(&facts, &per_lead, &self.config);
        outcome.rescored = rescore_many(
            &mut tx,
            &targets,
            facts,
            folded,
            Record::OnChange,
            &self.config,
        )
        .await?;
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

/// Locks the leads, all at once and in id order, and reads what scoring them needs. A batch calls
/// it before it writes anything, so concurrent batches touching the same leads take turns instead
/// of deadlocking, and what it reads is what the batch that held the lock last committed. `no key
/// update`, not `update`: the foreign keys of rows a batch inserts hold `key share` locks on its
/// leads, which `for update` in another batch would wait on.
///
/// Deleted leads are returned (`live` false) and filtered by the caller, not in SQL: with
/// `deleted_at is null` in the query the planner may pick one of the partial score indexes and
/// scan all of it, which it did at 70 ms a batch while statistics lagged behind a bulk load.
async fn lock_and_read(conn: &mut PgConnection, leads: &[Uuid]) -> sqlx::Result<Vec<LeadFacts>> {
    if leads.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "select id, email, phone, company, budget::float8 as budget, interest, timeline, repeat_customer, last_activity_at,
                owner_id, score::int4 as score, tier, confidence, signal_state, deleted_at is null as live
         from leads where id = any($1) order by id for no key update",
    )
    .bind(leads)
    .fetch_all(conn)
    .await
}

/// One signal seen `n` times at a moment.
type Unit = (Signal, OffsetDateTime, usize);

/// Ties a visitor to a lead and moves their earlier events onto it. Idempotent: events already
/// moved are not moved (or counted) again. Returns what the moved events signal, if any moved.
async fn stitch(
    conn: &mut PgConnection,
    lead: Uuid,
    anonymous: &str,
) -> sqlx::Result<Option<Vec<Unit>>> {
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
    if moved.is_empty() {
        return Ok(None);
    }
    let units: Vec<Unit> = moved
        .iter()
        .filter(|(_, _, _, suppressed)| suppressed.is_none())
        .flat_map(|(kind, properties, at, _)| {
            signals_of(kind, properties)
                .into_iter()
                .map(move |(s, n)| (s, *at, n))
        })
        .collect();
    Ok(Some(units))
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

/// Folds each lead's new events into its running signals, as [`lock_and_read`] found them. Each
/// folded lead's signals are written back whole with its update in [`rescore_many`].
fn fold(facts: &[LeadFacts], per_lead: &BTreeMap<Uuid, Vec<Unit>>, config: &Config) -> Folded {
    let stored: HashMap<Uuid, &[f64]> = facts
        .iter()
        .map(|f| (f.id, f.signal_state.as_slice()))
        .collect();
    let mut folded = Folded::default();
    for (lead, units) in per_lead.iter().filter(|(_, units)| !units.is_empty()) {
        let mut signals = stored
            .get(lead)
            .map(|s| stored_signals::parse(s))
            .unwrap_or_default();
        for (signal, at, n) in units {
            for _ in 0..*n {
                let next = match signals.known.get(signal) {
                    Some(r) => r.add(*at, config.half_life_days),
                    None => Running::first(*at),
                };
                signals.known.insert(*signal, next);
            }
            folded
                .activity
                .entry(*lead)
                .and_modify(|t: &mut OffsetDateTime| *t = (*t).max(*at))
                .or_insert(*at);
        }
        folded.stored.insert(*lead, signals.to_stored());
        folded.signals.insert(*lead, signals.known);
    }
    folded
}

/// What [`fold`] leaves for [`rescore_many`]: each folded lead's newest activity, its signals
/// after the fold, and the array to store for them.
#[derive(Debug, Default)]
struct Folded {
    activity: HashMap<Uuid, OffsetDateTime>,
    signals: HashMap<Uuid, BTreeMap<Signal, Running>>,
    stored: HashMap<Uuid, Vec<f64>>,
}

#[derive(sqlx::FromRow)]
struct LeadFacts {
    id: Uuid,
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
    confidence: Option<String>,
    /// See [`stored_signals`].
    signal_state: Vec<f64>,
    live: bool,
}

/// The interest the lead names, if any, for [`matching_prices`] to match.
fn interest(fact: &LeadFacts) -> Option<&str> {
    fact.interest.as_deref().filter(|i| !i.trim().is_empty())
}

/// Prices of in-stock items whose name or category the interest mentions.
fn matching_prices(interest: Option<&str>, inventory: &[(String, String, f64)]) -> Vec<f64> {
    let Some(interest) = interest.map(str::to_lowercase) else {
        return Vec::new();
    };
    inventory
        .iter()
        .filter(|(name, category, _)| {
            interest.contains(category.as_str()) || interest.contains(name.as_str())
        })
        .map(|(_, _, price)| *price)
        .collect()
}

/// When a re-score leaves a history row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Asked for (a re-score request, `rescore --all` after a model change): always.
    Always,
    /// Driven by events: only when the total, tier or confidence moved. Most events for a lead
    /// whose signals are at their caps change nothing a rep can see, and writing history, insights
    /// and a `scores.updated` event for each of them was most of the scorer's work.
    OnChange,
}

/// Scores `lead` now and records it (see [`rescore_many`]).
pub async fn rescore(
    conn: &mut PgConnection,
    lead: Uuid,
    trigger: Option<Uuid>,
    config: &Config,
) -> sqlx::Result<Score> {
    // Like a batch, wait for any batch changing this lead: reading its signals before that batch
    // commits would record a score older than the one the batch is about to write.
    let facts = lock_and_read(conn, &[lead]).await?;
    let mut scored = rescore_many(
        conn,
        &[(lead, trigger)],
        facts,
        Folded::default(),
        Record::Always,
        config,
    )
    .await?;
    Ok(scored
        .pop()
        .map(|(_, score)| score)
        .unwrap_or_else(|| model::score(&Inputs::default(), OffsetDateTime::now_utc(), config)))
}

/// Scores the leads now and records, with a handful of statements for the whole set: history rows
/// (once per trigger event, as `record` says), insights, and `scores.updated` events, then one
/// update of each lead with its current score and its newest `activity`. `facts` are the leads as
/// [`lock_and_read`] found them (it may hold more leads than `targets`).
async fn rescore_many(
    conn: &mut PgConnection,
    targets: &[(Uuid, Option<Uuid>)],
    facts: Vec<LeadFacts>,
    folded: Folded,
    record: Record,
    config: &Config,
) -> sqlx::Result<Vec<(Uuid, Score)>> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let triggers: HashMap<Uuid, Option<Uuid>> = targets.iter().copied().collect();
    let facts: Vec<LeadFacts> = facts
        .into_iter()
        .filter(|f| f.live && triggers.contains_key(&f.id))
        .collect();
    let Folded {
        activity,
        mut signals,
        mut stored,
    } = folded;
    // Every statement is a round trip, and under load each costs the scorer and its backend a
    // wait for a CPU: a batch runs only the statements it needs.
    let inventory: Vec<(String, String, f64)> = if facts.iter().any(|f| interest(f).is_some()) {
        sqlx::query_as(
            "select lower(name), lower(category), price::float8 from inventory_items where active and quantity > 0",
        )
        .fetch_all(&mut *conn)
        .await?
    } else {
        Vec::new()
    };
    let now = OffsetDateTime::now_utc();

    let mut scored: Vec<(LeadFacts, Option<Uuid>, Score)> = Vec::with_capacity(facts.len());
    for mut fact in facts {
        fact.last_activity_at = fact.last_activity_at.max(activity.get(&fact.id).copied());
        let inputs = Inputs {
            signals: signals
                .remove(&fact.id)
                .unwrap_or_else(|| stored_signals::parse(&fact.signal_state).known),
            last_activity_at: fact.last_activity_at,
            budget: fact.budget,
            interest: fact.interest.clone(),
            timeline: fact.timeline.clone(),
            has_email: fact.email.is_some(),
            has_phone: fact.phone.is_some(),
            has_company: fact.company.is_some(),
            repeat_customer: fact.repeat_customer,
            matching_prices: matching_prices(interest(&fact), &inventory),
        };
        let score = model::score(&inputs, now, config);
        let trigger = triggers.get(&fact.id).copied().flatten();
        scored.push((fact, trigger, score));
    }
    let (scored, unchanged): (Vec<_>, Vec<_>) = scored
        .into_iter()
        .partition(|(fact, _, score)| record == Record::Always || moved(fact, score));

    let ids: Vec<Uuid> = scored.iter().map(|_| Uuid::now_v7()).collect();
    let inserted = insert_history(conn, &scored, &ids).await?;

    // Only what was newly scored moves the lead's current score and tells the notifier:
    // a redelivered trigger has been recorded already.
    let mut insights = Insights::default();
    let mut updates = LeadUpdates::default();
    let mut events = Vec::new();
    for ((fact, trigger, score), score_id) in scored.iter().zip(&ids) {
        let recorded = inserted.contains(score_id);
        updates.push(
            fact.id,
            recorded.then_some(score),
            activity.get(&fact.id).copied(),
            stored.remove(&fact.id),
        );
        if !recorded {
            continue;
        }
        insights.push(fact.id, *score_id, score);
        let event = Envelope::new(subjects::SCORES_UPDATED, "scorer")
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?
            .with_lead(fact.id)
            .with_data(json!({
                "score_id": score_id,
                "owner_id": fact.owner_id,
                "old_score": fact.score,
                "new_score": score.total,
                "old_tier": fact.tier,
                "new_tier": score.tier.as_str(),
                "trigger_event_id": trigger,
            }))
            .with_traceparent(leadflow_platform::telemetry::current_traceparent());
        events.push(event);
    }
    for (fact, _, _) in &unchanged {
        updates.push(
            fact.id,
            None,
            activity.get(&fact.id).copied(),
            stored.remove(&fact.id),
        );
    }
    insights.insert(conn).await?;
    updates.apply(conn).await?;
    outbox::enqueue_many(conn, &events).await?;
    Ok(scored
        .into_iter()
        .chain(unchanged)
        .map(|(fact, _, score)| (fact.id, score))
        .collect())
}

/// Appends a history row for each scored lead, `ids` their row ids; returns the ids inserted. A
/// trigger event already recorded (a redelivery) inserts nothing.
async fn insert_history(
    conn: &mut PgConnection,
    scored: &[(LeadFacts, Option<Uuid>, Score)],
    ids: &[Uuid],
) -> sqlx::Result<BTreeSet<Uuid>> {
    if scored.is_empty() {
        return Ok(BTreeSet::new());
    }
    let lead_ids: Vec<Uuid> = scored.iter().map(|(f, _, _)| f.id).collect();
    let totals: Vec<i16> = scored.iter().map(|(_, _, s)| s.total as i16).collect();
    let engagement: Vec<f32> = scored.iter().map(|(_, _, s)| s.engagement as f32).collect();
    let buying: Vec<f32> = scored
        .iter()
        .map(|(_, _, s)| s.buying_signal as f32)
        .collect();
    let demographic: Vec<f32> = scored
        .iter()
        .map(|(_, _, s)| s.demographic as f32)
        .collect();
    let tiers: Vec<&str> = scored.iter().map(|(_, _, s)| s.tier.as_str()).collect();
    let confidences: Vec<&str> = scored
        .iter()
        .map(|(_, _, s)| s.confidence.as_str())
        .collect();
    let confidence_values: Vec<f32> = scored
        .iter()
        .map(|(_, _, s)| s.confidence_value as f32)
        .collect();
    let breakdowns: Vec<Value> = scored
        .iter()
        .map(|(_, _, s)| serde_json::to_value(&s.breakdown).unwrap_or_default())
        .collect();
    let trigger_ids: Vec<Option<Uuid>> = scored.iter().map(|(_, t, _)| *t).collect();
    // `created_at` is the insert's own time, not the transaction's start (`now()`): batches for a
    // lead take turns on its lock, and the one that started first may commit second, with the
    // fuller score. Ordering history by start time would make the older score look current.
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "insert into lead_scores (id, lead_id, total, engagement, buying_signal, demographic, tier, confidence,
                                  confidence_value, breakdown, model_version, trigger_event_id, created_at)
         select id, lead_id, total, engagement, buying_signal, demographic, tier, confidence, confidence_value, breakdown, $11, trigger,
                clock_timestamp()
         from unnest($1::uuid[], $2::uuid[], $3::int2[], $4::float4[], $5::float4[], $6::float4[], $7::text[], $8::text[],
                     $9::float4[], $10::jsonb[], $12::uuid[])
              as t(id, lead_id, total, engagement, buying_signal, demographic, tier, confidence, confidence_value, breakdown, trigger)
         on conflict (lead_id, trigger_event_id) where trigger_event_id is not null do nothing
         returning id",
    )
    .bind(ids)
    .bind(&lead_ids)
    .bind(&totals)
    .bind(&engagement)
    .bind(&buying)
    .bind(&demographic)
    .bind(&tiers)
    .bind(&confidences)
    .bind(&confidence_values)
    .bind(&breakdowns)
    .bind(model::MODEL_VERSION)
    .bind(&trigger_ids)
    .fetch_all(conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// The insights of newly recorded scores, written in one statement. Their ids are UUID v7, like
/// the history rows': time-ordered keys go to the right edge of the primary key's index, where
/// random ones (the column's default) would each land on a page of their own across an index that
/// grows with every score ever recorded.
#[derive(Default)]
struct Insights {
    id: Vec<Uuid>,
    lead: Vec<Uuid>,
    score: Vec<Uuid>,
    kind: Vec<&'static str>,
    text: Vec<String>,
    weight: Vec<f32>,
}

impl Insights {
    fn push(&mut self, lead: Uuid, score_id: Uuid, score: &Score) {
        for insight in &score.insights {
            self.id.push(Uuid::now_v7());
            self.lead.push(lead);
            self.score.push(score_id);
            self.kind.push(insight.kind.as_str());
            self.text.push(insight.text.clone());
            self.weight.push(insight.score as f32);
        }
    }

    async fn insert(self, conn: &mut PgConnection) -> sqlx::Result<()> {
        if self.lead.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "insert into lead_insights (id, lead_id, score_id, kind, text, score)
             select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::float4[])",
        )
        .bind(&self.id)
        .bind(&self.lead)
        .bind(&self.score)
        .bind(&self.kind)
        .bind(&self.text)
        .bind(&self.weight)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// One statement's changes to leads, a lead an entry: a new score, where one was recorded; the
/// newest activity; the lead's whole signal array, where events were folded in. The arrays go
/// as one flat array and each lead's bounds in it: `unnest` would flatten an array of arrays.
#[derive(Default)]
struct LeadUpdates<'a> {
    lead: Vec<Uuid>,
    total: Vec<Option<i16>>,
    tier: Vec<Option<&'a str>>,
    confidence: Vec<Option<&'a str>>,
    confidence_value: Vec<Option<f32>>,
    activity: Vec<Option<OffsetDateTime>>,
    /// Bounds (1-based, inclusive, as PostgreSQL slices) of each lead's array in `states`.
    state_from: Vec<Option<i32>>,
    state_to: Vec<Option<i32>>,
    states: Vec<f64>,
}

impl<'a> LeadUpdates<'a> {
    fn push(
        &mut self,
        lead: Uuid,
        score: Option<&'a Score>,
        activity: Option<OffsetDateTime>,
        signals: Option<Vec<f64>>,
    ) {
        if score.is_none() && activity.is_none() && signals.is_none() {
            return;
        }
        self.lead.push(lead);
        self.total.push(score.map(|s| s.total as i16));
        self.tier.push(score.map(|s| s.tier.as_str()));
        self.confidence.push(score.map(|s| s.confidence.as_str()));
        self.confidence_value
            .push(score.map(|s| s.confidence_value as f32));
        self.activity.push(activity);
        let bounds = signals.map(|state| {
            let from = self.states.len() as i32 + 1;
            self.states.extend(state);
            (from, self.states.len() as i32)
        });
        self.state_from.push(bounds.map(|(from, _)| from));
        self.state_to.push(bounds.map(|(_, to)| to));
    }

    /// Leads whose score stands still get only their activity and signals. Neither is indexed,
    /// so PostgreSQL can make those updates HOT (see the leads fillfactor).
    async fn apply(self, conn: &mut PgConnection) -> sqlx::Result<()> {
        if self.lead.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "update leads l set score = coalesce(t.total, l.score), tier = coalesce(t.tier, l.tier),
                                confidence = coalesce(t.confidence, l.confidence),
                                confidence_value = coalesce(t.confidence_value, l.confidence_value),
                                scored_at = case when t.total is null then l.scored_at else now() end,
                                last_activity_at = greatest(l.last_activity_at, t.activity),
                                signal_state = case when t.state_from is null then l.signal_state
                                                    else ($9::float8[])[t.state_from:t.state_to] end
             from (select * from unnest($1::uuid[], $2::int2[], $3::text[], $4::text[], $5::float4[],
                                        $6::timestamptz[], $7::int4[], $8::int4[])
                                 as u(id, total, tier, confidence, confidence_value, activity, state_from, state_to)
                   order by id) as t
             where l.id = t.id",
        )
        .bind(&self.lead)
        .bind(&self.total)
        .bind(&self.tier)
        .bind(&self.confidence)
        .bind(&self.confidence_value)
        .bind(&self.activity)
        .bind(&self.state_from)
        .bind(&self.state_to)
        .bind(&self.states)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Whether a new score differs from the lead's current one in anything a rep sees.
fn moved(fact: &LeadFacts, score: &Score) -> bool {
    fact.score != Some(score.total)
        || fact.tier.as_deref() != Some(score.tier.as_str())
        || fact.confidence.as_deref() != Some(score.confidence.as_str())
}

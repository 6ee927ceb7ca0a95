//! Scores as the frontend reads them: the current breakdown, its history, the events behind it,
//! "call these now", and a fresh score on request (asked of the scorer over NATS).

use std::time::Duration;

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult},
    extract::{ApiPath, ApiQuery, Auth},
    leads::{
        fetch_visible,
        model::{COLUMNS as LEAD_COLUMNS, Lead},
    },
    openapi::ProblemDoc,
    policy::LeadScope,
    state::AppState,
};

/// How long `POST /leads/{id}/score` waits for a scorer.
const RESCORE_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(current_score, request_score))
        .routes(routes!(score_history))
        .routes(routes!(lead_events))
        .routes(routes!(prioritized))
}

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct ScoreRecord {
    id: Uuid,
    total: i32,
    engagement: f64,
    buying_signal: f64,
    demographic: f64,
    tier: String,
    confidence: String,
    confidence_value: f64,
    /// Which signal gave how many points.
    #[schema(value_type = Vec<ContributionDoc>)]
    breakdown: Value,
    model_version: String,
    trigger_event_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

/// One line of a breakdown as the scorer writes it (`leadflow_scorer::model::Contribution`); the
/// column is stored JSON, so this only documents its shape.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ContributionDoc {
    signal: String,
    /// `engagement`, `buying_signal` or `demographic`.
    component: String,
    points: f64,
    detail: String,
}

const SCORE_COLUMNS: &str = "id, total::int4 as total, engagement::float8 as engagement, buying_signal::float8 as buying_signal,
    demographic::float8 as demographic, tier, confidence, confidence_value::float8 as confidence_value, breakdown,
    model_version, trigger_event_id, created_at";

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Insight {
    /// `talking_point`, `concern` or `opportunity`.
    kind: String,
    text: String,
    score: f64,
}

#[derive(Serialize, ToSchema)]
pub struct CurrentScore {
    score: ScoreRecord,
    insights: Vec<Insight>,
}

async fn insights_of(conn: &mut sqlx::PgConnection, score_id: Uuid) -> sqlx::Result<Vec<Insight>> {
    sqlx::query_as("select kind, text, score::float8 as score from lead_insights where score_id = $1 order by score desc, text")
        .bind(score_id)
        .fetch_all(conn)
        .await
}

/// The lead's current score, its breakdown and insights.
#[utoipa::path(get, path = "/leads/{id}/score", tag = "scores", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = CurrentScore), (status = 404, body = ProblemDoc)))]
async fn current_score(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<CurrentScore>> {
    let mut conn = state.conn().await?;
    fetch_visible(&mut conn, &actor, id, false).await?;
    let score: ScoreRecord = sqlx::query_as(sql!(
        "select {SCORE_COLUMNS} from lead_scores where lead_id = $1 order by created_at desc, id desc limit 1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ApiError::NotFound("score (the lead has not been scored yet)"))?;
    let insights = insights_of(&mut conn, score.id).await?;
    Ok(Json(CurrentScore { score, insights }))
}

/// Score the lead now, from the scorer (503 if no scorer answers in time).
#[utoipa::path(post, path = "/leads/{id}/score", tag = "scores", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Object), (status = 404, body = ProblemDoc), (status = 503, body = ProblemDoc)))]
async fn request_score(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Value>> {
    {
        let mut conn = state.conn().await?;
        fetch_visible(&mut conn, &actor, id, false).await?;
    }
    let bus = &state.platform.bus;
    let subject = bus.namespace().subject(leadflow_events::subjects::RESCORE);
    let payload = serde_json::json!({ "lead_id": id }).to_string();
    let unavailable = || ApiError::Rejected {
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        detail: "No scorer answered in time; the lead keeps its last score. Retry shortly.".into(),
    };
    let reply = tokio::time::timeout(
        RESCORE_TIMEOUT,
        bus.client().request(subject, payload.into()),
    )
    .await
    .map_err(|_| unavailable())?
    .map_err(|_| unavailable())?;
    let answer: Value = serde_json::from_slice(&reply.payload).map_err(|_| unavailable())?;
    match answer.get("error").and_then(Value::as_str) {
        None => Ok(Json(answer)),
        Some("not_found") => Err(ApiError::NotFound("lead")),
        Some(_) => Err(unavailable()),
    }
}

/// Every score the lead had, newest first.
#[utoipa::path(get, path = "/leads/{id}/score/history", tag = "scores", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<ScoreRecord>), (status = 404, body = ProblemDoc)))]
async fn score_history(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Vec<ScoreRecord>>> {
    let mut conn = state.conn().await?;
    fetch_visible(&mut conn, &actor, id, false).await?;
    let rows = sqlx::query_as(sql!(
        "select {SCORE_COLUMNS} from lead_scores where lead_id = $1 order by created_at desc, id desc limit 200"
    ))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(rows))
}

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct EngagementEvent {
    event_id: Uuid,
    event_type: String,
    /// As the sender posted them; data, never markup.
    #[schema(value_type = Object)]
    properties: Value,
    /// Set for bots and proxies: stored, never scored.
    suppressed_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
}

/// The engagement events recorded for the lead, newest first.
#[utoipa::path(get, path = "/leads/{id}/events", tag = "scores", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<EngagementEvent>), (status = 404, body = ProblemDoc)))]
async fn lead_events(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Vec<EngagementEvent>>> {
    let mut conn = state.conn().await?;
    fetch_visible(&mut conn, &actor, id, false).await?;
    let rows = sqlx::query_as(
        "select event_id, event_type, properties, suppressed_reason, occurred_at from lead_engagement_events
         where lead_id = $1 order by occurred_at desc, event_id desc limit 500",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(rows))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PrioritizedQuery {
    /// How many leads (1 to 50, default 5).
    #[param(minimum = 1, maximum = 50)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Prioritized {
    lead: Lead,
    insights: Vec<Insight>,
}

/// "Call these now": the highest current scores first, each with its insights. Sales reps get
/// their own leads.
#[utoipa::path(get, path = "/leads/prioritized", tag = "scores", security(("bearer" = [])), params(PrioritizedQuery),
    responses((status = 200, body = Vec<Prioritized>), (status = 400, body = ProblemDoc)))]
async fn prioritized(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiQuery(query): ApiQuery<PrioritizedQuery>,
) -> ApiResult<Json<Vec<Prioritized>>> {
    let limit = query.limit.unwrap_or(5);
    if !(1..=50).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 50.".into()));
    }
    let mut conn = state.conn().await?;
    let leads: Vec<Lead> = sqlx::query_as(sql!(
        "select {LEAD_COLUMNS} from leads
         where deleted_at is null and score is not null and status not in ('won', 'lost')
           and ($1::uuid is null or owner_id = $1)
         order by leads.score desc nulls last, leads.created_at desc, leads.id limit $2"
    ))
    .bind(LeadScope::of(&actor).owner())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(leads.len());
    for lead in leads {
        let latest: Option<Uuid> = sqlx::query_scalar("select id from lead_scores where lead_id = $1 order by created_at desc, id desc limit 1")
            .bind(lead.id)
            .fetch_optional(&mut *conn)
            .await?;
        let insights = match latest {
            Some(score_id) => insights_of(&mut conn, score_id).await?,
            None => Vec::new(),
        };
        out.push(Prioritized { lead, insights });
    }
    Ok(Json(out))
}

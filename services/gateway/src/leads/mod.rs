//! Leads: CRUD with optimistic locking and soft delete, list with filters, search, sort and
//! pagination, CSV import and export, bulk changes, and each lead's activities.

mod activities;
mod bulk;
pub mod counts;
mod csv;
pub mod filter;
pub mod import;
pub mod model;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;
use sqlx::{PgConnection, QueryBuilder};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use self::{
    filter::LeadFilter,
    model::{COLUMNS, Lead, LeadPatch, NewLead, ValidLead},
};
use crate::{
    audit::{self, Change},
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath, Auth, Meta},
    openapi::ProblemDoc,
    pagination::Page,
    policy::{Actor, LeadScope, Permission, allows},
    state::AppState,
    users::field,
};

pub use activities::insert as activities_insert;
pub use csv::limit_for as csv_limits;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_leads, create_lead))
        .routes(routes!(get_lead, update_lead, delete_lead))
        .merge(csv::router())
        .merge(bulk::router())
        .merge(activities::router())
}

/// The lead `id` if the caller may see it; 404 otherwise (also for other reps' leads).
pub async fn fetch_visible(
    conn: &mut PgConnection,
    actor: &Actor,
    id: Uuid,
    for_update: bool,
) -> ApiResult<Lead> {
    let lock = if for_update { " for update" } else { "" };
    sqlx::query_as(sql!(
        "select {COLUMNS} from leads where id = $1 and deleted_at is null and ($2::uuid is null or owner_id = $2){lock}"
    ))
    .bind(id)
    .bind(LeadScope::of(actor).owner())
    .fetch_optional(conn)
    .await?
    .ok_or(ApiError::NotFound("lead"))
}

/// The page of leads `filter` selects (all of them, up to `limit`, for export).
pub async fn query_leads(
    conn: &mut PgConnection,
    actor: &Actor,
    filter: &LeadFilter,
    limit: (i64, i64),
) -> ApiResult<Vec<Lead>> {
    let mut qb = QueryBuilder::new(format!(
        "select {COLUMNS} from leads where deleted_at is null"
    ));
    filter.push_conditions(&mut qb, LeadScope::of(actor), actor.id);
    filter.push_order(&mut qb);
    // Validated integers, inlined for the same reason as statuses (see `LeadFilter::push_conditions`).
    qb.push(format!(" limit {} offset {}", limit.0, limit.1));
    Ok(qb.build_query_as().fetch_all(conn).await?)
}

/// How many leads `filter` selects, from the short-lived cache when it can.
async fn count_leads(
    state: &AppState,
    conn: &mut PgConnection,
    actor: &Actor,
    filter: &LeadFilter,
) -> ApiResult<i64> {
    let key = filter.count_key(LeadScope::of(actor), actor.id);
    if let Some(total) = state.lead_counts.get(&key) {
        return Ok(total);
    }
    let generation = state.lead_counts.generation();
    let mut qb = QueryBuilder::new("select count(*) from leads where deleted_at is null");
    filter.push_conditions(&mut qb, LeadScope::of(actor), actor.id);
    let total = qb.build_query_scalar().fetch_one(conn).await?;
    state.lead_counts.put(key, generation, total);
    Ok(total)
}

/// List leads: filter, search, sort, paginate. Sales reps see only their own.
#[utoipa::path(get, path = "/leads", tag = "leads", security(("bearer" = [])),
    params(
        filter::LeadQueryDoc,
        ("page" = Option<i64>, Query, minimum = 1),
        ("per_page" = Option<i64>, Query, minimum = 1, maximum = 100, description = "at most 100"),
    ),
    responses((status = 200, body = Page<Lead>), (status = 400, body = ProblemDoc), (status = 401, body = ProblemDoc)))]
async fn list_leads(
    State(state): State<AppState>,
    Auth(actor): Auth,
    axum::extract::Query(pairs): axum::extract::Query<Vec<(String, String)>>,
) -> ApiResult<Json<Page<Lead>>> {
    let filter = LeadFilter::parse(&pairs)?;
    let limits = filter.page.limit_offset()?;
    let mut conn = state.conn().await?;
    let items = query_leads(&mut conn, &actor, &filter, limits).await?;
    // A short first page is its own count; otherwise count (or reuse a recent count).
    let total = if filter.page.page == 1 && (items.len() as i64) < limits.0 {
        items.len() as i64
    } else {
        count_leads(&state, &mut conn, &actor, &filter).await?
    };
    Ok(Json(Page {
        items,
        total,
        page: filter.page.page,
        per_page: filter.page.per_page,
    }))
}

/// Create a lead; it is scored automatically from the `leads.created` event.
#[utoipa::path(post, path = "/leads", tag = "leads", security(("bearer" = [])), request_body = NewLead,
    responses((status = 201, body = Lead), (status = 400, body = ProblemDoc), (status = 415, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn create_lead(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiJson(body): ApiJson<NewLead>,
) -> ApiResult<impl IntoResponse> {
    let lead = body.validate()?;
    let mut tx = state.begin().await?;
    let created = insert_lead(&mut tx, &actor, &meta, lead).await?;
    tx.commit().await?;
    state.lead_counts.invalidate();
    Ok((StatusCode::CREATED, Json(created)))
}

/// Inserts a validated lead with its audit row and `leads.created` event.
pub async fn insert_lead(
    conn: &mut PgConnection,
    actor: &Actor,
    meta: &Meta,
    lead: ValidLead,
) -> ApiResult<Lead> {
    // A rep's new lead is their own. An admin or manager naming an owner makes an assignment,
    // so ownership always has its assignment and its `assignments.created` event.
    let (owner, assign_to) = if allows(actor.role, Permission::SetLeadOwner) {
        (None, lead.owner_id)
    } else if lead.owner_id.is_some_and(|o| o != actor.id) {
        return Err(ApiError::Validation(vec![field(
            "owner_id",
            "only admins and managers choose a lead's owner",
        )]));
    } else {
        (Some(actor.id), None)
    };
    let created: Lead = sqlx::query_as(sql!(
        "insert into leads (first_name, last_name, email, phone, company, job_title, source, status, budget,
                            interest, timeline, tags, custom, utm, repeat_customer, owner_id, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9::float8::numeric, $10, $11, $12, $13, $14, $15, $16, $17)
         returning {COLUMNS}"
    ))
    .bind(&lead.first_name)
    .bind(&lead.last_name)
    .bind(&lead.email)
    .bind(&lead.phone)
    .bind(&lead.company)
    .bind(&lead.job_title)
    .bind(&lead.source)
    .bind(lead.status.as_str())
    .bind(lead.budget)
    .bind(&lead.interest)
    .bind(&lead.timeline)
    .bind(&lead.tags)
    .bind(&lead.custom)
    .bind(&lead.utm)
    .bind(lead.repeat_customer)
    .bind(owner)
    .bind(actor.id)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| match crate::error::violated_constraint(&e) {
        Some("leads_owner_id_fkey") => ApiError::Validation(vec![field("owner_id", "no such user")]),
        _ => e.into(),
    })?;
    audit::change(
        conn,
        actor,
        meta,
        Change {
            action: "lead.create",
            entity_type: "lead",
            entity_id: created.id,
            details: json!({}),
            event: Some((
                leadflow_events::subjects::LEADS_CREATED,
                Some(created.id),
                json!({ "lead": created }),
            )),
        },
    )
    .await?;
    match assign_to {
        Some(assignee) => {
            crate::assignments::assign_lead(conn, actor, meta, created.id, assignee, None).await?;
            fetch_visible(conn, actor, created.id, false).await
        }
        None => Ok(created),
    }
}

/// One lead.
#[utoipa::path(get, path = "/leads/{id}", tag = "leads", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Lead), (status = 404, body = ProblemDoc)))]
async fn get_lead(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Lead>> {
    let mut conn = state.conn().await?;
    Ok(Json(fetch_visible(&mut conn, &actor, id, false).await?))
}

/// Change a lead; returns it updated. A stale `version` gets 409 and changes nothing.
#[utoipa::path(patch, path = "/leads/{id}", tag = "leads", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = LeadPatch,
    responses((status = 200, body = Lead), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn update_lead(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<LeadPatch>,
) -> ApiResult<Json<Lead>> {
    let mut tx = state.begin().await?;
    let updated = apply_patch(&mut tx, &actor, &meta, id, &patch).await?;
    tx.commit().await?;
    state.lead_counts.invalidate();
    Ok(Json(updated))
}

/// Applies `patch` to a visible lead: one audit row, one `leads.updated` event, and a
/// status-change activity when the status moved.
pub async fn apply_patch(
    conn: &mut PgConnection,
    actor: &Actor,
    meta: &Meta,
    id: Uuid,
    patch: &LeadPatch,
) -> ApiResult<Lead> {
    let mut c = model::Checks::default();
    if patch.owner_id.is_some() {
        c.errors.push(field(
            "owner_id",
            "change the owner with POST /api/assignments or a transfer",
        ));
    }
    let first_name = patch
        .first_name
        .as_deref()
        .map(|v| c.text("first_name", Some(v), 100).unwrap_or_default());
    let last_name = patch
        .last_name
        .as_deref()
        .map(|v| c.text("last_name", Some(v), 100).unwrap_or_default());
    let email = patch.email.as_ref().map(|v| c.email(v.as_deref()));
    let phone = patch
        .phone
        .as_ref()
        .map(|v| c.text("phone", v.as_deref(), 50));
    let company = patch
        .company
        .as_ref()
        .map(|v| c.text("company", v.as_deref(), 200));
    let job_title = patch
        .job_title
        .as_ref()
        .map(|v| c.text("job_title", v.as_deref(), 200));
    let source = patch
        .source
        .as_ref()
        .map(|v| c.text("source", v.as_deref(), 100));
    let budget = patch.budget.map(|v| c.budget(v));
    let interest = patch
        .interest
        .as_ref()
        .map(|v| c.text("interest", v.as_deref(), 500));
    let timeline = patch
        .timeline
        .as_ref()
        .map(|v| c.text("timeline", v.as_deref(), 100));
    let tags = patch
        .tags
        .as_deref()
        .map(|t| c.tags(Some(t)).unwrap_or_default());
    let custom = patch
        .custom
        .as_ref()
        .and_then(|v| c.object("custom", Some(v)));
    c.finish()?;

    let current = fetch_visible(conn, actor, id, true).await?;
    if patch.version.is_some_and(|v| v != current.version) {
        return Err(ApiError::Conflict(format!(
            "The lead changed since you read it (version {} now); reload and try again.",
            current.version
        )));
    }

    let mut changed: Vec<&str> = Vec::new();
    let mut qb = QueryBuilder::new("update leads set version = version + 1");
    macro_rules! set {
        ($name:literal, $value:expr) => {
            if let Some(value) = $value {
                changed.push($name);
                qb.push(concat!(", ", $name, " = ")).push_bind(value);
            }
        };
    }
    set!("first_name", first_name);
    set!("last_name", last_name);
    set!("email", email);
    set!("phone", phone);
    set!("company", company);
    set!("job_title", job_title);
    set!("source", source);
    set!("status", patch.status.map(|s| s.as_str()));
    if let Some(budget) = budget {
        changed.push("budget");
        qb.push(", budget = ")
            .push_bind(budget)
            .push("::float8::numeric");
    }
    set!("interest", interest);
    set!("timeline", timeline);
    set!("tags", tags);
    set!("custom", custom);
    set!("repeat_customer", patch.repeat_customer);
    qb.push(" where id = ")
        .push_bind(id)
        .push(format!(" returning {COLUMNS}"));
    let updated: Lead = qb
        .build_query_as()
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| match crate::error::violated_constraint(&e) {
            Some("leads_owner_id_fkey") => {
                ApiError::Validation(vec![field("owner_id", "no such user")])
            }
            _ => e.into(),
        })?;

    if let Some(status) = patch.status.filter(|s| s.as_str() != current.status) {
        activities::insert(
            conn,
            id,
            Some(actor.id),
            "status_change",
            &format!(
                "Status changed from {} to {}",
                current.status,
                status.as_str()
            ),
            json!({ "from": current.status, "to": status.as_str() }),
        )
        .await?;
    }
    audit::change(
        conn,
        actor,
        meta,
        Change {
            action: "lead.update",
            entity_type: "lead",
            entity_id: id,
            details: json!({ "fields": changed, "version": updated.version }),
            event: Some((
                leadflow_events::subjects::LEADS_UPDATED,
                Some(id),
                json!({ "changed": changed, "lead": updated }),
            )),
        },
    )
    .await?;
    Ok(updated)
}

/// Delete a lead (kept for history, hidden everywhere).
#[utoipa::path(delete, path = "/leads/{id}", tag = "leads", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ProblemDoc)))]
async fn delete_lead(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.begin().await?;
    soft_delete(&mut tx, &actor, &meta, id).await?;
    tx.commit().await?;
    state.lead_counts.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn soft_delete(
    conn: &mut PgConnection,
    actor: &Actor,
    meta: &Meta,
    id: Uuid,
) -> ApiResult<()> {
    fetch_visible(conn, actor, id, true).await?;
    sqlx::query("update leads set deleted_at = now(), version = version + 1 where id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("update assignments set status = 'completed', completed_at = now() where lead_id = $1 and status = 'active'")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    audit::change(
        conn,
        actor,
        meta,
        Change {
            action: "lead.delete",
            entity_type: "lead",
            entity_id: id,
            details: json!({}),
            event: Some((
                leadflow_events::subjects::LEADS_DELETED,
                Some(id),
                json!({ "id": id }),
            )),
        },
    )
    .await?;
    Ok(())
}

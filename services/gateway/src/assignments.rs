//! Assignments: admins and managers assign a lead to a rep, transfer it, complete it. A lead has
//! at most one active assignment (the database enforces it) and the assignee becomes its owner.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    audit::{self, Change},
    error::{ApiError, ApiResult, violated_constraint},
    extract::{ApiJson, ApiPath, ApiQuery, Auth, Meta},
    leads::{fetch_visible, model::Lead},
    openapi::ProblemDoc,
    pagination::{Page, PageParams, PageQuery, fetch_page},
    policy::{Actor, Permission, Role, allows, require},
    state::AppState,
    users::field,
};
use leadflow_events::subjects;

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Assignment {
    id: Uuid,
    lead_id: Uuid,
    assignee_id: Uuid,
    assigned_by: Option<Uuid>,
    /// `active`, `transferred` or `completed`.
    status: String,
    note: Option<String>,
    transferred_to: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339::option")]
    completed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, lead_id, assignee_id, assigned_by, status, note, transferred_to, completed_at, created_at, updated_at";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_assignments, create_assignment))
        .routes(routes!(transfer_assignment))
        .routes(routes!(complete_assignment))
}

/// The assignee must be an active sales rep or manager.
async fn check_assignee(conn: &mut PgConnection, assignee: Uuid) -> ApiResult<()> {
    let role: Option<String> =
        sqlx::query_scalar("select role from users where id = $1 and active")
            .bind(assignee)
            .fetch_optional(conn)
            .await?;
    match role.as_deref().and_then(Role::parse) {
        Some(Role::SalesRep | Role::Manager) => Ok(()),
        Some(Role::Admin) => Err(ApiError::Validation(vec![field(
            "assignee_id",
            "leads are assigned to sales reps or managers",
        )])),
        None => Err(ApiError::Validation(vec![field(
            "assignee_id",
            "no such active user",
        )])),
    }
}

fn clean_note(note: Option<&str>) -> ApiResult<Option<String>> {
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > 2000) {
        return Err(ApiError::Validation(vec![field(
            "note",
            "must be at most 2000 characters",
        )]));
    }
    Ok(note.map(str::to_owned))
}

/// Assigns `lead_id` to `assignee`; the caller must be allowed to assign. Shared with bulk assign.
pub async fn assign_lead(
    conn: &mut PgConnection,
    actor: &Actor,
    meta: &Meta,
    lead_id: Uuid,
    assignee: Uuid,
    note: Option<&str>,
) -> ApiResult<Assignment> {
    require(actor, Permission::AssignLeads)?;
    let note = clean_note(note)?;
    check_assignee(conn, assignee).await?;
    fetch_visible(conn, actor, lead_id, true).await?;
    let assignment: Assignment = sqlx::query_as(sql!(
        "insert into assignments (lead_id, assignee_id, assigned_by, note) values ($1, $2, $3, $4) returning {COLUMNS}"
    ))
    .bind(lead_id)
    .bind(assignee)
    .bind(actor.id)
    .bind(&note)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("assignments_one_active_per_lead") => {
            ApiError::Conflict("The lead already has an active assignment; transfer it instead.".into())
        }
        _ => e.into(),
    })?;
    set_owner(conn, lead_id, assignee).await?;
    crate::leads::activities_insert(
        conn,
        lead_id,
        Some(actor.id),
        "assignment",
        "Assigned",
        json!({ "assignee_id": assignee }),
    )
    .await?;
    audit::change(
        conn,
        actor,
        meta,
        Change {
            action: "assignment.create",
            entity_type: "assignment",
            entity_id: assignment.id,
            details: json!({ "lead_id": lead_id, "assignee_id": assignee }),
            event: Some((
                subjects::ASSIGNMENTS_CREATED,
                Some(lead_id),
                json!({ "assignment_id": assignment.id, "lead_id": lead_id, "assignee_id": assignee, "assigned_by": actor.id, "note": note }),
            )),
        },
    )
    .await?;
    Ok(assignment)
}

async fn set_owner(conn: &mut PgConnection, lead_id: Uuid, owner: Uuid) -> sqlx::Result<Lead> {
    sqlx::query_as(sql!(
        "update leads set owner_id = $2, version = version + 1 where id = $1 returning {}",
        crate::leads::model::COLUMNS
    ))
    .bind(lead_id)
    .bind(owner)
    .fetch_one(conn)
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AssignmentFilter {
    /// `active`, `transferred` or `completed`.
    #[param(pattern = "^(active|transferred|completed)$")]
    status: Option<String>,
    assignee_id: Option<Uuid>,
    lead_id: Option<Uuid>,
    /// 1-based page number.
    #[serde(default = "crate::pagination::first_page")]
    #[param(minimum = 1)]
    page: i64,
    /// At most 100.
    #[serde(default = "crate::pagination::default_per_page")]
    #[param(minimum = 1, maximum = 100)]
    per_page: i64,
}

impl AssignmentFilter {
    fn paging(&self) -> PageParams {
        PageParams {
            page: self.page,
            per_page: self.per_page,
        }
    }
}

/// Assignments; sales reps see their own.
#[utoipa::path(get, path = "/assignments", tag = "assignments", security(("bearer" = [])), params(AssignmentFilter),
    responses((status = 200, body = Page<Assignment>), (status = 400, body = ProblemDoc)))]
async fn list_assignments(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiQuery(filter): ApiQuery<AssignmentFilter>,
) -> ApiResult<Json<Page<Assignment>>> {
    if let Some(status) = filter.status.as_deref()
        && !["active", "transferred", "completed"].contains(&status)
    {
        return Err(ApiError::BadRequest(
            "status must be active, transferred or completed.".into(),
        ));
    }
    let only_mine = (!allows(actor.role, Permission::AssignLeads)).then_some(actor.id);
    let mut conn = state.conn().await?;
    let query = PageQuery {
        columns: COLUMNS,
        from: "assignments",
        order: "created_at desc, id",
    };
    let page = fetch_page(&mut conn, query, &filter.paging(), |qb| {
        if let Some(status) = &filter.status {
            qb.push(" and status = ").push_bind(status.clone());
        }
        if let Some(assignee) = filter.assignee_id {
            qb.push(" and assignee_id = ").push_bind(assignee);
        }
        if let Some(lead) = filter.lead_id {
            qb.push(" and lead_id = ").push_bind(lead);
        }
        if let Some(me) = only_mine {
            qb.push(" and assignee_id = ").push_bind(me);
        }
    })
    .await?;
    Ok(Json(page))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAssignment {
    lead_id: Uuid,
    assignee_id: Uuid,
    #[schema(max_length = 2000)]
    note: Option<String>,
}

/// Assign a lead (admins and managers); the assignee becomes its owner.
#[utoipa::path(post, path = "/assignments", tag = "assignments", security(("bearer" = [])), request_body = NewAssignment,
    responses((status = 201, body = Assignment), (status = 403, body = ProblemDoc), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn create_assignment(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiJson(body): ApiJson<NewAssignment>,
) -> ApiResult<impl IntoResponse> {
    let mut tx = state.begin().await?;
    let assignment = assign_lead(
        &mut tx,
        &actor,
        &meta,
        body.lead_id,
        body.assignee_id,
        body.note.as_deref(),
    )
    .await?;
    tx.commit().await?;
    state.lead_counts.invalidate();
    Ok((StatusCode::CREATED, Json(assignment)))
}

/// The assignment if the caller may act on it: admins and managers any, reps their own.
async fn fetch_active(conn: &mut PgConnection, actor: &Actor, id: Uuid) -> ApiResult<Assignment> {
    // A sales rep acts only on their own assignment of a lead they still own and can see.
    let assignment: Assignment = sqlx::query_as(sql!(
        "select {} from assignments a join leads l on l.id = a.lead_id
         where a.id = $1 and l.deleted_at is null
           and ($2::uuid is null or (a.assignee_id = $2 and l.owner_id = $2))
         for update of a",
        COLUMNS
            .split(", ")
            .map(|c| format!("a.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(id)
    .bind((!allows(actor.role, Permission::AssignLeads)).then_some(actor.id))
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ApiError::NotFound("assignment"))?;
    if assignment.status != "active" {
        return Err(ApiError::Conflict(format!(
            "The assignment is already {}.",
            assignment.status
        )));
    }
    Ok(assignment)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    assignee_id: Uuid,
    #[schema(max_length = 2000)]
    note: Option<String>,
}

/// Hand an active assignment to someone else (admins, managers, or its assignee).
#[utoipa::path(post, path = "/assignments/{id}/transfer", tag = "assignments", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = Transfer,
    responses((status = 201, body = Assignment), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn transfer_assignment(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Transfer>,
) -> ApiResult<impl IntoResponse> {
    let note = clean_note(body.note.as_deref())?;
    let mut tx = state.begin().await?;
    let current = fetch_active(&mut tx, &actor, id).await?;
    if current.assignee_id == body.assignee_id {
        return Err(ApiError::Validation(vec![field(
            "assignee_id",
            "the lead is already assigned to this user",
        )]));
    }
    check_assignee(&mut tx, body.assignee_id).await?;
    sqlx::query("update assignments set status = 'transferred' where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let next: Assignment = sqlx::query_as(sql!(
        "insert into assignments (lead_id, assignee_id, assigned_by, note) values ($1, $2, $3, $4) returning {COLUMNS}"
    ))
    .bind(current.lead_id)
    .bind(body.assignee_id)
    .bind(actor.id)
    .bind(&note)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("update assignments set transferred_to = $2 where id = $1")
        .bind(id)
        .bind(next.id)
        .execute(&mut *tx)
        .await?;
    set_owner(&mut tx, current.lead_id, body.assignee_id).await?;
    crate::leads::activities_insert(
        &mut tx,
        current.lead_id,
        Some(actor.id),
        "assignment",
        "Transferred",
        json!({ "from": current.assignee_id, "to": body.assignee_id }),
    )
    .await?;
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "assignment.transfer",
            entity_type: "assignment",
            entity_id: id,
            details: json!({ "lead_id": current.lead_id, "from": current.assignee_id, "to": body.assignee_id, "new_assignment_id": next.id }),
            event: Some((
                subjects::ASSIGNMENTS_TRANSFERRED,
                Some(current.lead_id),
                json!({ "assignment_id": next.id, "previous_assignment_id": id, "lead_id": current.lead_id,
                        "previous_assignee_id": current.assignee_id, "assignee_id": body.assignee_id,
                        "assigned_by": actor.id, "note": note }),
            )),
        },
    )
    .await?;
    tx.commit().await?;
    state.lead_counts.invalidate();
    Ok((StatusCode::CREATED, Json(next)))
}

/// Mark an active assignment done (admins, managers, or its assignee).
#[utoipa::path(post, path = "/assignments/{id}/complete", tag = "assignments", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Assignment), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc)))]
async fn complete_assignment(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Assignment>> {
    let mut tx = state.begin().await?;
    let current = fetch_active(&mut tx, &actor, id).await?;
    let done: Assignment = sqlx::query_as(sql!(
        "update assignments set status = 'completed', completed_at = now() where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "assignment.complete",
            entity_type: "assignment",
            entity_id: id,
            details: json!({ "lead_id": current.lead_id }),
            event: Some((
                subjects::ASSIGNMENTS_COMPLETED,
                Some(current.lead_id),
                json!({ "assignment_id": id, "lead_id": current.lead_id, "assignee_id": current.assignee_id,
                        "assigned_by": current.assigned_by, "completed_by": actor.id }),
            )),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Json(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_trimmed_and_bounded() {
        assert_eq!(
            clean_note(Some("  hi ")).expect("ok").as_deref(),
            Some("hi")
        );
        assert_eq!(clean_note(Some("   ")).expect("ok"), None);
        assert!(clean_note(Some(&"x".repeat(2001))).is_err());
    }
}

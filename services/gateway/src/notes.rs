//! Notes on leads. Whoever sees a lead may note it; authors (and admins and managers) edit and
//! delete their notes.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    audit::{self, Change},
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath, ApiQuery, Auth, Meta},
    leads::fetch_visible,
    openapi::ProblemDoc,
    policy::{Actor, LeadScope, Permission, allows},
    state::AppState,
    users::field,
};

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Note {
    id: Uuid,
    lead_id: Uuid,
    author_id: Option<Uuid>,
    body: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

const COLUMNS: &str = "n.id, n.lead_id, n.author_id, n.body, n.created_at, n.updated_at";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notes, create_note))
        .routes(routes!(update_note, delete_note))
}

fn clean_body(body: &str) -> ApiResult<String> {
    let body = body.trim();
    if body.is_empty() || body.chars().count() > 20_000 {
        return Err(ApiError::Validation(vec![field(
            "body",
            "must be 1 to 20000 characters",
        )]));
    }
    Ok(body.to_owned())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NoteFilter {
    /// The lead whose notes to list.
    lead_id: Uuid,
}

/// A lead's notes, newest first.
#[utoipa::path(get, path = "/notes", tag = "notes", security(("bearer" = [])), params(NoteFilter),
    responses((status = 200, body = Vec<Note>), (status = 400, body = ProblemDoc), (status = 404, body = ProblemDoc)))]
async fn list_notes(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiQuery(filter): ApiQuery<NoteFilter>,
) -> ApiResult<Json<Vec<Note>>> {
    let mut conn = state.conn().await?;
    fetch_visible(&mut conn, &actor, filter.lead_id, false).await?;
    let notes = sqlx::query_as(sql!(
        "select {COLUMNS} from lead_notes n where n.lead_id = $1 order by n.created_at desc, n.id desc limit 500"
    ))
    .bind(filter.lead_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(notes))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    lead_id: Uuid,
    #[schema(pattern = r"\S", max_length = 20000)]
    body: String,
}

/// Note a lead (publishes `notes.created`, which the scorer reads for urgency words).
#[utoipa::path(post, path = "/notes", tag = "notes", security(("bearer" = [])), request_body = NewNote,
    responses((status = 201, body = Note), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn create_note(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiJson(input): ApiJson<NewNote>,
) -> ApiResult<impl IntoResponse> {
    let body = clean_body(&input.body)?;
    let mut tx = state.begin().await?;
    fetch_visible(&mut tx, &actor, input.lead_id, true).await?;
    let note: Note = sqlx::query_as(
        "insert into lead_notes as n (lead_id, author_id, body) values ($1, $2, $3)
         returning n.id, n.lead_id, n.author_id, n.body, n.created_at, n.updated_at",
    )
    .bind(input.lead_id)
    .bind(actor.id)
    .bind(&body)
    .fetch_one(&mut *tx)
    .await?;
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "note.create",
            entity_type: "note",
            entity_id: note.id,
            details: json!({ "lead_id": note.lead_id }),
            event: Some((
                leadflow_events::subjects::NOTES_CREATED,
                Some(note.lead_id),
                json!({ "note_id": note.id, "lead_id": note.lead_id, "author_id": actor.id, "body": body }),
            )),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(note)))
}

/// The note if the caller sees its lead and may change it (author, admin or manager).
async fn fetch_editable(conn: &mut sqlx::PgConnection, actor: &Actor, id: Uuid) -> ApiResult<Note> {
    let note: Note = sqlx::query_as(sql!(
        "select {COLUMNS} from lead_notes n join leads l on l.id = n.lead_id
         where n.id = $1 and l.deleted_at is null and ($2::uuid is null or l.owner_id = $2) for update of n"
    ))
    .bind(id)
    .bind(LeadScope::of(actor).owner())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ApiError::NotFound("note"))?;
    if note.author_id != Some(actor.id) && !allows(actor.role, Permission::AssignLeads) {
        return Err(ApiError::Forbidden(
            "Only the note's author, a manager or an admin may change it.".into(),
        ));
    }
    Ok(note)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotePatch {
    #[schema(pattern = r"\S", max_length = 20000)]
    body: String,
}

/// Edit a note.
#[utoipa::path(patch, path = "/notes/{id}", tag = "notes", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = NotePatch,
    responses((status = 200, body = Note), (status = 403, body = ProblemDoc), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn update_note(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<NotePatch>,
) -> ApiResult<Json<Note>> {
    let body = clean_body(&patch.body)?;
    let mut tx = state.begin().await?;
    fetch_editable(&mut tx, &actor, id).await?;
    let note: Note = sqlx::query_as(
        "update lead_notes n set body = $2 where n.id = $1
         returning n.id, n.lead_id, n.author_id, n.body, n.created_at, n.updated_at",
    )
    .bind(id)
    .bind(&body)
    .fetch_one(&mut *tx)
    .await?;
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "note.update",
            entity_type: "note",
            entity_id: id,
            details: json!({ "lead_id": note.lead_id }),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Json(note))
}

/// Delete a note.
#[utoipa::path(delete, path = "/notes/{id}", tag = "notes", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204, description = "deleted"), (status = 403, body = ProblemDoc), (status = 404, body = ProblemDoc)))]
async fn delete_note(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.begin().await?;
    let note = fetch_editable(&mut tx, &actor, id).await?;
    sqlx::query("delete from lead_notes where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "note.delete",
            entity_type: "note",
            entity_id: id,
            details: json!({ "lead_id": note.lead_id }),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

//! `POST /leads/bulk`: assign, update or delete many leads at once. Each lead is its own
//! transaction, so one refused lead does not undo the others; the answer says which did what.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{apply_patch, model::LeadPatch, soft_delete};
use crate::{
    assignments::assign_lead,
    error::{ApiError, ApiResult},
    extract::{ApiJson, Auth, Meta},
    openapi::ProblemDoc,
    policy::{Permission, require},
    state::AppState,
    users::field,
};

pub const MAX_IDS: usize = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(bulk))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    Assign,
    Update,
    Delete,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    action: BulkAction,
    /// At most 500 lead ids.
    ids: Vec<Uuid>,
    /// For `assign`.
    assignee_id: Option<Uuid>,
    /// For `assign`.
    note: Option<String>,
    /// For `update`: the same fields as `PATCH /leads/{id}` (without `version`).
    changes: Option<LeadPatch>,
}

#[derive(Serialize, ToSchema)]
pub struct BulkReport {
    succeeded: Vec<Uuid>,
    failed: Vec<BulkFailure>,
}

#[derive(Serialize, ToSchema)]
pub struct BulkFailure {
    id: Uuid,
    status: u16,
    detail: String,
}

/// Assign, update or delete up to 500 leads; leads the caller cannot see fail as not found.
#[utoipa::path(post, path = "/leads/bulk", tag = "leads", security(("bearer" = [])), request_body = BulkRequest,
    responses((status = 200, body = BulkReport), (status = 403, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn bulk(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiJson(body): ApiJson<BulkRequest>,
) -> ApiResult<Json<BulkReport>> {
    if body.ids.is_empty() || body.ids.len() > MAX_IDS {
        return Err(ApiError::Validation(vec![field(
            "ids",
            format!("give 1 to {MAX_IDS} lead ids"),
        )]));
    }
    let mut ids = body.ids.clone();
    ids.sort();
    ids.dedup();
    match body.action {
        BulkAction::Assign => {
            require(&actor, Permission::AssignLeads)?;
            if body.assignee_id.is_none() {
                return Err(ApiError::Validation(vec![field(
                    "assignee_id",
                    "required to assign",
                )]));
            }
        }
        BulkAction::Update => {
            let Some(changes) = &body.changes else {
                return Err(ApiError::Validation(vec![field(
                    "changes",
                    "required to update",
                )]));
            };
            if changes.version.is_some() {
                return Err(ApiError::Validation(vec![field(
                    "changes.version",
                    "not allowed in bulk updates",
                )]));
            }
        }
        BulkAction::Delete => {}
    }

    let mut report = BulkReport {
        succeeded: Vec::new(),
        failed: Vec::new(),
    };
    for id in ids {
        let mut tx = state.begin().await?;
        let outcome = match body.action {
            BulkAction::Assign => {
                let assignee = body.assignee_id.unwrap_or_default();
                assign_lead(&mut tx, &actor, &meta, id, assignee, body.note.as_deref())
                    .await
                    .map(drop)
            }
            BulkAction::Update => match &body.changes {
                Some(changes) => apply_patch(&mut tx, &actor, &meta, id, changes)
                    .await
                    .map(drop),
                None => Ok(()),
            },
            BulkAction::Delete => soft_delete(&mut tx, &actor, &meta, id).await,
        };
        match outcome {
            Ok(()) => {
                tx.commit().await?;
                state.lead_counts.invalidate();
                report.succeeded.push(id);
            }
            Err(
                err @ (ApiError::Unavailable(_) | ApiError::Database(_) | ApiError::Internal(_)),
            ) => return Err(err),
            Err(err) => {
                report.failed.push(BulkFailure {
                    id,
                    status: status_of(&err),
                    detail: err.to_string(),
                });
            }
        }
    }
    Ok(Json(report))
}

fn status_of(err: &ApiError) -> u16 {
    err.status().as_u16()
}

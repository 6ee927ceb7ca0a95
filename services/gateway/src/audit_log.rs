//! `GET /api/audit`: the audit log, for admins.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    error::ApiResult,
    extract::{ApiQuery, Auth},
    openapi::ProblemDoc,
    pagination::{Page, PageParams, PageQuery, fetch_page},
    policy::{Permission, require},
    state::AppState,
};

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct AuditRecord {
    id: Uuid,
    actor_id: Option<Uuid>,
    actor_email: Option<String>,
    action: String,
    entity_type: Option<String>,
    entity_id: Option<Uuid>,
    success: bool,
    request_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    #[schema(value_type = Object)]
    details: Value,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    /// e.g. `auth.login`, `lead.update`.
    action: Option<String>,
    actor_id: Option<Uuid>,
    entity_id: Option<Uuid>,
    /// 1-based page number.
    #[serde(default = "crate::pagination::first_page")]
    #[param(minimum = 1)]
    page: i64,
    /// At most 100.
    #[serde(default = "crate::pagination::default_per_page")]
    #[param(minimum = 1, maximum = 100)]
    per_page: i64,
}

impl AuditFilter {
    fn paging(&self) -> PageParams {
        PageParams {
            page: self.page,
            per_page: self.per_page,
        }
    }
}

/// Audit log, newest first (admins).
#[utoipa::path(get, path = "/audit", tag = "audit", security(("bearer" = [])), params(AuditFilter),
    responses((status = 200, body = Page<AuditRecord>), (status = 403, body = ProblemDoc)))]
async fn list_audit(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ApiQuery(filter): ApiQuery<AuditFilter>,
) -> ApiResult<Json<Page<AuditRecord>>> {
    require(&actor, Permission::ReadAudit)?;
    let mut conn = state.conn().await?;
    let query = PageQuery {
        columns: "id, actor_id, actor_email, action, entity_type, entity_id, success, request_id, host(ip) as ip,
                  user_agent, details, created_at",
        from: "audit_log",
        order: "created_at desc, id",
    };
    let page = fetch_page(&mut conn, query, &filter.paging(), |qb| {
        if let Some(action) = &filter.action {
            qb.push(" and action = ").push_bind(action.clone());
        }
        if let Some(actor) = filter.actor_id {
            qb.push(" and actor_id = ").push_bind(actor);
        }
        if let Some(entity) = filter.entity_id {
            qb.push(" and entity_id = ").push_bind(entity);
        }
    })
    .await?;
    Ok(Json(page))
}

//! CSV import (a `text/csv` body or a multipart upload, with a per-row report: good rows are
//! kept whatever the bad ones hold) and export (the list's current filter).

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Multipart, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    filter::LeadFilter,
    import::{HEADER, ParsedImport, RowReport, parse_import},
    insert_lead,
    model::Lead,
    query_leads,
};
use crate::{
    error::{ApiError, ApiResult},
    extract::{Auth, Meta},
    openapi::ProblemDoc,
    state::AppState,
};

/// Most rows one export returns.
pub const MAX_EXPORT: i64 = 100_000;
/// Imports may be larger than the API's general 1 MiB body limit.
pub const MAX_IMPORT_BYTES: usize = 10 * 1024 * 1024;

/// The body limit for `path` when it is the import route.
pub fn limit_for(path: &str) -> Option<usize> {
    (path == "/api/leads/import").then_some(MAX_IMPORT_BYTES)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(import_leads))
        .routes(routes!(export_leads))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReport {
    imported: usize,
    rejected: usize,
    rows: Vec<RowReport>,
}

/// The CSV itself, from a `text/csv` body or the first file of a multipart form.
async fn csv_body(request: Request, state: &AppState) -> ApiResult<Bytes> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let too_large = |_| ApiError::Rejected {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        detail: format!(
            "Imports are limited to {} MiB.",
            MAX_IMPORT_BYTES / 1024 / 1024
        ),
    };
    if content_type.starts_with("text/csv") || content_type.starts_with("application/csv") {
        return axum::body::to_bytes(request.into_body(), MAX_IMPORT_BYTES)
            .await
            .map_err(too_large);
    }
    if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(request, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        while let Some(part) = form
            .next_field()
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?
        {
            if part.file_name().is_some() || part.name() == Some("file") {
                return part.bytes().await.map_err(|e| ApiError::Rejected {
                    status: e.status(),
                    detail: e.body_text(),
                });
            }
        }
        return Err(ApiError::BadRequest("The form has no file field.".into()));
    }
    Err(ApiError::Rejected {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        detail: "Send the CSV as `Content-Type: text/csv`, or as a file in `multipart/form-data`."
            .into(),
    })
}

/// Import leads from CSV (header row required). Valid rows are created even when others are
/// refused; the report says which and why.
#[utoipa::path(post, path = "/leads/import", tag = "leads", security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv", description = "CSV with a header row; columns: first_name, last_name, email, phone, company, job_title, source, status, budget, interest, timeline, tags (separated by ;), repeat_customer"),
    responses((status = 200, body = ImportReport), (status = 400, body = ProblemDoc), (status = 413, body = ProblemDoc), (status = 415, body = ProblemDoc)))]
async fn import_leads(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    request: Request,
) -> ApiResult<Json<ImportReport>> {
    let bytes = csv_body(request, &state).await?;
    let ParsedImport { mut rows, valid } = parse_import(&bytes)?;

    let mut tx = state.begin().await?;
    // Each row in its own savepoint: a row the database refuses is reported, not fatal to the rest.
    for (position, lead) in valid {
        let mut row = sqlx::Connection::begin(&mut *tx).await?;
        match insert_lead(&mut row, &actor, &meta, lead).await {
            Ok(created) => {
                row.commit().await?;
                rows[position].id = Some(created.id);
            }
            Err(ApiError::Validation(errors)) => {
                row.rollback().await?;
                rows[position].status = "rejected";
                rows[position].errors = errors
                    .into_iter()
                    .map(|e| format!("{}: {}", e.field, e.detail))
                    .collect();
            }
            Err(ApiError::Database(err)) => {
                row.rollback().await?;
                tracing::warn!(error = %leadflow_platform::error_chain(&err), row = rows[position].row, "import row refused by the database");
                rows[position].status = "rejected";
                rows[position].errors =
                    vec!["the database refused this row; check its values".into()];
            }
            Err(other) => return Err(other),
        }
    }
    tx.commit().await?;
    state.lead_counts.invalidate();
    let imported = rows.iter().filter(|r| r.status == "imported").count();
    Ok(Json(ImportReport {
        imported,
        rejected: rows.len() - imported,
        rows,
    }))
}

/// Export the leads the list would show for the same filter (all pages, up to 100,000 rows).
#[utoipa::path(get, path = "/leads/export", tag = "leads", security(("bearer" = [])),
    params(super::filter::LeadQueryDoc),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400, body = ProblemDoc)))]
async fn export_leads(
    State(state): State<AppState>,
    Auth(actor): Auth,
    axum::extract::Query(pairs): axum::extract::Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| k != "page" && k != "per_page")
        .collect();
    let filter = LeadFilter::parse(&pairs)?;
    let mut conn = state.conn().await?;
    let rows = query_leads(&mut conn, &actor, &filter, (MAX_EXPORT, 0)).await?;
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    let mut header: Vec<&str> = vec!["id"];
    header.extend(HEADER);
    header.extend(["owner_id", "score", "tier", "created_at"]);
    writer
        .write_record(&header)
        .map_err(|e| ApiError::Internal(e.into()))?;
    for row in rows {
        writer
            .write_record(export_row(&row))
            .map_err(|e| ApiError::Internal(e.into()))?;
    }
    let body = writer
        .into_inner()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"leads.csv\""),
    );
    Ok(response)
}

fn export_row(lead: &Lead) -> Vec<String> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        lead.id.to_string(),
        guard_formula(&lead.first_name),
        guard_formula(&lead.last_name),
        guard_formula(&opt(&lead.email)),
        guard_formula(&opt(&lead.phone)),
        guard_formula(&opt(&lead.company)),
        guard_formula(&opt(&lead.job_title)),
        guard_formula(&opt(&lead.source)),
        lead.status.clone(),
        lead.budget.map(|b| b.to_string()).unwrap_or_default(),
        guard_formula(&opt(&lead.interest)),
        guard_formula(&opt(&lead.timeline)),
        lead.tags
            .iter()
            .map(|t| guard_formula(t))
            .collect::<Vec<_>>()
            .join(";"),
        lead.repeat_customer.to_string(),
        lead.owner_id.map(|o| o.to_string()).unwrap_or_default(),
        lead.score.map(|s| s.to_string()).unwrap_or_default(),
        lead.tier.clone().unwrap_or_default(),
        lead.created_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    ]
}

/// Spreadsheets run cells starting with = + - @ as formulas (CSV injection); a leading quote
/// makes them text. Import strips it again, so a round trip keeps the value.
fn guard_formula(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

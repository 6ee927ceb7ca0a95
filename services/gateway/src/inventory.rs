//! What the team sells; the scorer's fit score compares leads' interest and budget to it.
//! Everyone reads it; admins and managers change it.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    audit::{self, Change},
    error::{ApiError, ApiResult, violated_constraint},
    extract::{ApiJson, ApiPath, ApiQuery, Auth, Meta},
    leads::model::Checks,
    openapi::ProblemDoc,
    pagination::{Page, PageParams, PageQuery, fetch_page},
    policy::{Permission, require},
    state::AppState,
    users::field,
};

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Item {
    id: Uuid,
    sku: Option<String>,
    name: String,
    category: String,
    description: Option<String>,
    price: f64,
    quantity: i32,
    active: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, sku, name, category, description, price::float8 as price, quantity, active, created_at, updated_at";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_items, create_item))
        .routes(routes!(get_item, update_item, delete_item))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ItemFilter {
    category: Option<String>,
    /// Only items with stock.
    #[serde(default)]
    in_stock: bool,
    /// 1-based page number.
    #[serde(default = "crate::pagination::first_page")]
    #[param(minimum = 1)]
    page: i64,
    /// At most 100.
    #[serde(default = "crate::pagination::default_per_page")]
    #[param(minimum = 1, maximum = 100)]
    per_page: i64,
}

impl ItemFilter {
    fn paging(&self) -> PageParams {
        PageParams {
            page: self.page,
            per_page: self.per_page,
        }
    }
}

/// Inventory items.
#[utoipa::path(get, path = "/inventory", tag = "inventory", security(("bearer" = [])), params(ItemFilter),
    responses((status = 200, body = Page<Item>)))]
async fn list_items(
    State(state): State<AppState>,
    Auth(_actor): Auth,
    ApiQuery(filter): ApiQuery<ItemFilter>,
) -> ApiResult<Json<Page<Item>>> {
    let mut conn = state.conn().await?;
    let query = PageQuery {
        columns: COLUMNS,
        from: "inventory_items",
        order: "name, id",
    };
    let page = fetch_page(&mut conn, query, &filter.paging(), |qb| {
        qb.push(" and active");
        if let Some(category) = &filter.category {
            qb.push(" and lower(category) = lower(")
                .push_bind(category.clone())
                .push(")");
        }
        if filter.in_stock {
            qb.push(" and quantity > 0");
        }
    })
    .await?;
    Ok(Json(page))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    #[schema(pattern = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$", max_length = 100)]
    sku: Option<String>,
    #[schema(pattern = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$", max_length = 200)]
    name: Option<String>,
    #[schema(pattern = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$", max_length = 100)]
    category: Option<String>,
    #[schema(pattern = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$", max_length = 2000)]
    description: Option<String>,
    #[schema(minimum = 0, maximum = 999_999_999_999.0)]
    price: Option<f64>,
    #[schema(minimum = 0)]
    quantity: Option<i32>,
    active: Option<bool>,
}

/// `POST /inventory` as documented: [`ItemInput`] with the fields a new item needs (blank text
/// counts as absent, and control characters other than tab and newline are refused).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NewItemDoc {
    #[schema(pattern = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$", max_length = 100)]
    sku: Option<String>,
    #[schema(
        pattern = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b-\x1f\x7f-\x9f]*$",
        max_length = 200
    )]
    name: String,
    #[schema(
        pattern = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b-\x1f\x7f-\x9f]*$",
        max_length = 100
    )]
    category: String,
    #[schema(pattern = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$", max_length = 2000)]
    description: Option<String>,
    #[schema(minimum = 0, maximum = 999_999_999_999.0)]
    price: f64,
    #[schema(minimum = 0)]
    quantity: Option<i32>,
    active: Option<bool>,
}

struct ValidItem {
    sku: Option<String>,
    name: Option<String>,
    category: Option<String>,
    description: Option<String>,
    price: Option<f64>,
}

fn validate(input: &ItemInput, creating: bool) -> ApiResult<ValidItem> {
    let mut c = Checks::default();
    let item = ValidItem {
        sku: c.text("sku", input.sku.as_deref(), 100),
        name: c.text("name", input.name.as_deref(), 200),
        category: c.text("category", input.category.as_deref(), 100),
        description: c.text("description", input.description.as_deref(), 2000),
        price: input.price.and_then(|p| {
            let valid = p.is_finite() && (0.0..1e12).contains(&p);
            if !valid {
                c.errors
                    .push(field("price", "must be a non-negative amount"));
            }
            valid.then_some(p)
        }),
    };
    if input.quantity.is_some_and(|q| q < 0) {
        c.errors.push(field("quantity", "must be 0 or more"));
    }
    if creating {
        for (name, missing) in [
            ("name", item.name.is_none()),
            ("category", item.category.is_none()),
            ("price", item.price.is_none()),
        ] {
            if missing && !c.errors.iter().any(|e| e.field == name) {
                c.errors.push(field(name, "is required"));
            }
        }
    }
    c.finish()?;
    Ok(item)
}

fn sku_conflict(e: sqlx::Error) -> ApiError {
    match violated_constraint(&e) {
        Some("inventory_items_sku_key") => {
            ApiError::Conflict("An item with this SKU exists.".into())
        }
        _ => e.into(),
    }
}

/// Add an item (admins and managers).
#[utoipa::path(post, path = "/inventory", tag = "inventory", security(("bearer" = [])), request_body = NewItemDoc,
    responses((status = 201, body = Item), (status = 403, body = ProblemDoc), (status = 409, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn create_item(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiJson(input): ApiJson<ItemInput>,
) -> ApiResult<impl IntoResponse> {
    require(&actor, Permission::ManageInventory)?;
    let item = validate(&input, true)?;
    let mut tx = state.begin().await?;
    let created: Item = sqlx::query_as(sql!(
        "insert into inventory_items (sku, name, category, description, price, quantity, active)
         values ($1, $2, $3, $4, $5::float8::numeric, $6, $7) returning {COLUMNS}"
    ))
    .bind(&item.sku)
    .bind(&item.name)
    .bind(&item.category)
    .bind(&item.description)
    .bind(item.price)
    .bind(input.quantity.unwrap_or(0))
    .bind(input.active.unwrap_or(true))
    .fetch_one(&mut *tx)
    .await
    .map_err(sku_conflict)?;
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "inventory.create",
            entity_type: "inventory_item",
            entity_id: created.id,
            details: json!({}),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One item.
#[utoipa::path(get, path = "/inventory/{id}", tag = "inventory", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Item), (status = 404, body = ProblemDoc)))]
async fn get_item(
    State(state): State<AppState>,
    Auth(_actor): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Item>> {
    let mut conn = state.conn().await?;
    let item = sqlx::query_as(sql!("select {COLUMNS} from inventory_items where id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(ApiError::NotFound("inventory item"))?;
    Ok(Json(item))
}

/// Change an item (admins and managers).
#[utoipa::path(patch, path = "/inventory/{id}", tag = "inventory", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = ItemInput,
    responses((status = 200, body = Item), (status = 403, body = ProblemDoc), (status = 404, body = ProblemDoc),
        (status = 409, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn update_item(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<ItemInput>,
) -> ApiResult<Json<Item>> {
    require(&actor, Permission::ManageInventory)?;
    let item = validate(&input, false)?;
    let mut tx = state.begin().await?;
    let updated: Item = sqlx::query_as(sql!(
        "update inventory_items set sku = coalesce($2, sku), name = coalesce($3, name), category = coalesce($4, category),
            description = coalesce($5, description), price = coalesce($6::float8::numeric, price),
            quantity = coalesce($7, quantity), active = coalesce($8, active)
         where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(&item.sku)
    .bind(&item.name)
    .bind(&item.category)
    .bind(&item.description)
    .bind(item.price)
    .bind(input.quantity)
    .bind(input.active)
    .fetch_optional(&mut *tx)
    .await
    .map_err(sku_conflict)?
    .ok_or(ApiError::NotFound("inventory item"))?;
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "inventory.update",
            entity_type: "inventory_item",
            entity_id: id,
            details: json!({}),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Json(updated))
}

/// Remove an item (admins and managers).
#[utoipa::path(delete, path = "/inventory/{id}", tag = "inventory", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204, description = "deleted"), (status = 403, body = ProblemDoc), (status = 404, body = ProblemDoc)))]
async fn delete_item(
    State(state): State<AppState>,
    Auth(actor): Auth,
    meta: Meta,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    require(&actor, Permission::ManageInventory)?;
    let mut tx = state.begin().await?;
    let deleted = sqlx::query("delete from inventory_items where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::NotFound("inventory item"));
    }
    audit::change(
        &mut tx,
        &actor,
        &meta,
        Change {
            action: "inventory.delete",
            entity_type: "inventory_item",
            entity_id: id,
            details: json!({}),
            event: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

pub const MAX_PER_PAGE: i64 = 100;

#[derive(Debug, Clone, Deserialize)]
pub struct PageParams {
    pub page: i64,
    pub per_page: i64,
}

pub fn first_page() -> i64 {
    1
}

pub fn default_per_page() -> i64 {
    25
}

impl Default for PageParams {
    fn default() -> Self {
        Self {
            page: 1,
            per_page: 25,
        }
    }
}

impl PageParams {
    pub fn limit_offset(&self) -> Result<(i64, i64), ApiError> {
        if self.page < 1 {
            return Err(ApiError::BadRequest("page must be 1 or more.".into()));
        }
        if !(1..=MAX_PER_PAGE).contains(&self.per_page) {
            return Err(ApiError::BadRequest(format!(
                "per_page must be 1 to {MAX_PER_PAGE}."
            )));
        }
        Ok((self.per_page, (self.page - 1).saturating_mul(self.per_page)))
    }
}

/// `{items, total, page, per_page}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}

/// A row of `select count(*) over () as total, ...`: the page's items with the filter's total.
#[derive(Debug, sqlx::FromRow)]
pub struct Counted<T> {
    pub total: i64,
    #[sqlx(flatten)]
    pub item: T,
}

impl<T> Page<T> {
    /// `total_if_empty` answers the count when the page is past the end (and so has no rows
    /// carrying it).
    pub async fn from_counted<F, Fut>(
        rows: Vec<Counted<T>>,
        params: &PageParams,
        total_if_empty: F,
    ) -> Result<Self, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<i64, ApiError>>,
    {
        let total = match rows.first() {
            Some(row) => row.total,
            None if params.page > 1 => total_if_empty().await?,
            None => 0,
        };
        Ok(Self {
            items: rows.into_iter().map(|row| row.item).collect(),
            total,
            page: params.page,
            per_page: params.per_page,
        })
    }
}

/// One page of `select {columns} from {from} where <filter> order by {order}`, with the filter's
/// total: from the page's own rows (`count(*) over ()`), or counted apart when the page is past
/// the end. `filter` pushes ` and ...` conditions; it runs once per query it builds.
pub async fn fetch_page<T>(
    conn: &mut sqlx::PgConnection,
    query: PageQuery<'_>,
    paging: &PageParams,
    filter: impl Fn(&mut sqlx::QueryBuilder<sqlx::Postgres>),
) -> Result<Page<T>, ApiError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let (limit, offset) = paging.limit_offset()?;
    let mut qb = sqlx::QueryBuilder::new(format!(
        "select count(*) over () as total, {} from {} where true",
        query.columns, query.from
    ));
    filter(&mut qb);
    // Validated integers and constant SQL pieces only.
    qb.push(format!(
        " order by {} limit {limit} offset {offset}",
        query.order
    ));
    let rows: Vec<Counted<T>> = qb.build_query_as().fetch_all(&mut *conn).await?;
    Page::from_counted(rows, paging, || async {
        let mut count =
            sqlx::QueryBuilder::new(format!("select count(*) from {} where true", query.from));
        filter(&mut count);
        Ok(count.build_query_scalar().fetch_one(&mut *conn).await?)
    })
    .await
}

/// The constant parts of a paged list query.
pub struct PageQuery<'a> {
    pub columns: &'a str,
    pub from: &'a str,
    pub order: &'a str,
}

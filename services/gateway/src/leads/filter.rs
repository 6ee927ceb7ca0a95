//! `GET /leads` query parameters: parsed strictly (an unknown parameter or sort field is a 400
//! naming the allowed ones) and turned into SQL with only whitelisted columns.

use sqlx::{Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::LeadStatus;
use crate::{error::ApiError, pagination::PageParams, policy::LeadScope};

pub const PARAMS: &[&str] = &[
    "q",
    "status",
    "tier",
    "owner_id",
    "assigned_to",
    "min_score",
    "max_score",
    "created_after",
    "created_before",
    "tag",
    "source",
    "sort",
    "page",
    "per_page",
];

/// Sort keys and the column each orders by. Nullable columns sort their nulls last; the others
/// keep PostgreSQL's default null order so that the composite indexes match the ORDER BY exactly.
const SORTS: &[(&str, &str)] = &[
    ("score", "score"),
    ("created_at", "created_at"),
    ("updated_at", "updated_at"),
    ("last_activity_at", "last_activity_at"),
    ("last_name", "last_name"),
    ("company", "company"),
    ("status", "status"),
    ("budget", "budget"),
];
const NULLABLE: &[&str] = &["score", "last_activity_at", "company", "budget"];

/// The filter parameters as OpenAPI documents them (`GET /leads` and `/leads/export`). Parsing
/// is [`LeadFilter::parse`]'s, which keeps the order of `sort`; this type only describes it, with
/// the patterns and bounds the parser enforces.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LeadQueryDoc {
    /// Search in name, e-mail and company.
    q: Option<String>,
    /// Comma-separated: new, contacted, qualified, won, lost.
    #[param(
        pattern = r"^(new|contacted|qualified|won|lost)?(,(new|contacted|qualified|won|lost)?)*$"
    )]
    status: Option<String>,
    /// Comma-separated: hot, warm, cold.
    #[param(pattern = r"^(hot|warm|cold)?(,(hot|warm|cold)?)*$")]
    tier: Option<String>,
    owner_id: Option<Uuid>,
    /// `me`: the caller's leads.
    #[param(pattern = r"^me$")]
    assigned_to: Option<String>,
    #[param(minimum = 0, maximum = 100)]
    min_score: Option<i32>,
    #[param(minimum = 0, maximum = 100)]
    max_score: Option<i32>,
    /// A date (`2026-11-25`) or an RFC 3339 time.
    #[param(value_type = Option<OffsetDateTime>)]
    created_after: Option<String>,
    /// A date (`2026-11-25`) or an RFC 3339 time.
    #[param(value_type = Option<OffsetDateTime>)]
    created_before: Option<String>,
    tag: Option<String>,
    source: Option<String>,
    /// Comma-separated fields, `-` for descending (e.g. `-score,created_at`): score, created_at,
    /// updated_at, last_activity_at, last_name, company, status, budget.
    #[param(
        pattern = r"^([-+]?(score|created_at|updated_at|last_activity_at|last_name|company|status|budget))?(,([-+]?(score|created_at|updated_at|last_activity_at|last_name|company|status|budget))?)*$"
    )]
    sort: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct LeadFilter {
    pub q: Option<String>,
    pub statuses: Vec<LeadStatus>,
    pub tiers: Vec<String>,
    pub owner_id: Option<Uuid>,
    pub assigned_to_me: bool,
    pub min_score: Option<i32>,
    pub max_score: Option<i32>,
    pub created_after: Option<OffsetDateTime>,
    pub created_before: Option<OffsetDateTime>,
    pub tag: Option<String>,
    pub source: Option<String>,
    /// (column, descending)
    pub sort: Vec<(&'static str, bool)>,
    pub page: PageParams,
}

fn bad(detail: String) -> ApiError {
    ApiError::BadRequest(detail)
}

impl LeadFilter {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut filter = LeadFilter::default();
        for (key, value) in pairs {
            let value = value.trim();
            // PostgreSQL text cannot hold NUL; refuse it here rather than fail the query.
            if value.contains('\0') {
                return Err(bad(format!(
                    "{key} must not contain the NUL character (%00)."
                )));
            }
            match key.as_str() {
                "q" if !value.is_empty() => filter.q = Some(value.chars().take(200).collect()),
                "q" => {}
                "status" => {
                    for s in value.split(',').filter(|s| !s.is_empty()) {
                        filter.statuses.push(LeadStatus::parse(s).ok_or_else(|| {
                            bad(format!(
                                "Unknown status `{s}`; allowed: {}.",
                                LeadStatus::ALL.join(", ")
                            ))
                        })?);
                    }
                }
                "tier" => {
                    for t in value.split(',').filter(|t| !t.is_empty()) {
                        if !["hot", "warm", "cold"].contains(&t) {
                            return Err(bad(format!(
                                "Unknown tier `{t}`; allowed: hot, warm, cold."
                            )));
                        }
                        filter.tiers.push(t.to_owned());
                    }
                }
                "owner_id" => filter.owner_id = Some(parse_uuid(key, value)?),
                "assigned_to" if value == "me" => filter.assigned_to_me = true,
                "assigned_to" => {
                    return Err(bad(
                        "assigned_to only accepts `me`; use owner_id for others.".into(),
                    ));
                }
                "min_score" => filter.min_score = Some(parse_score(key, value)?),
                "max_score" => filter.max_score = Some(parse_score(key, value)?),
                "created_after" => filter.created_after = Some(parse_time(key, value)?),
                "created_before" => filter.created_before = Some(parse_time(key, value)?),
                "tag" => filter.tag = Some(value.to_lowercase()),
                "source" => filter.source = Some(value.to_owned()),
                "sort" => filter.sort = parse_sort(value)?,
                "page" => filter.page.page = parse_int(key, value)?,
                "per_page" => filter.page.per_page = parse_int(key, value)?,
                other => {
                    return Err(bad(format!(
                        "Unknown query parameter `{other}`; allowed: {}.",
                        PARAMS.join(", ")
                    )));
                }
            }
        }
        filter.page.limit_offset()?;
        Ok(filter)
    }

    /// ` and ...` conditions after `where deleted_at is null`, including the caller's scope.
    pub fn push_conditions(&self, qb: &mut QueryBuilder<Postgres>, scope: LeadScope, me: Uuid) {
        if let Some(owner) = scope.owner() {
            qb.push(" and owner_id = ").push_bind(owner);
        }
        if let Some(q) = &self.q {
            // LIKE on the trigram-indexed column; the user's wildcards are literal characters.
            let escaped = q
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            qb.push(" and search_text like ")
                .push_bind(format!("%{escaped}%"));
        }
        // Statuses and tiers are whitelisted words, written into the SQL rather than bound: with a
        // bound array PostgreSQL's cached generic plan cannot see how selective they are, and
        // picks plans ten times slower for the common pipeline views.
        if !self.statuses.is_empty() {
            let statuses: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
            qb.push(format!(" and status in ('{}')", statuses.join("','")));
        }
        if !self.tiers.is_empty() {
            qb.push(format!(" and tier in ('{}')", self.tiers.join("','")));
        }
        if let Some(owner) = self.owner_id {
            qb.push(" and owner_id = ").push_bind(owner);
        }
        if self.assigned_to_me {
            qb.push(" and owner_id = ").push_bind(me);
        }
        if let Some(min) = self.min_score {
            qb.push(" and score >= ").push_bind(min);
        }
        if let Some(max) = self.max_score {
            qb.push(" and score <= ").push_bind(max);
        }
        if let Some(after) = self.created_after {
            qb.push(" and created_at >= ").push_bind(after);
        }
        if let Some(before) = self.created_before {
            qb.push(" and created_at < ").push_bind(before);
        }
        if let Some(tag) = &self.tag {
            qb.push(" and tags @> array[")
                .push_bind(tag.clone())
                .push("]::text[]");
        }
        if let Some(source) = &self.source {
            qb.push(" and source = ").push_bind(source.clone());
        }
    }

    /// Identifies what the filter selects (not how it is sorted or paged), for the count cache.
    pub fn count_key(&self, scope: LeadScope, me: Uuid) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            scope.owner(),
            self.q,
            self.statuses,
            self.tiers,
            self.owner_id,
            if self.assigned_to_me {
                me.to_string()
            } else {
                String::new()
            },
            self.min_score,
            self.max_score,
            self.created_after,
            self.created_before,
            self.tag,
            self.source
        )
    }

    /// ` order by ...`, newest first unless asked otherwise; `id` keeps pages stable. Columns are
    /// qualified with the table: the select list casts some of them under the same names, and an
    /// ORDER BY on the cast output could not use the indexes.
    pub fn push_order(&self, qb: &mut QueryBuilder<Postgres>) {
        qb.push(" order by ");
        if self.sort.is_empty() {
            qb.push("leads.created_at desc, ");
        }
        for (column, descending) in &self.sort {
            let nulls = if NULLABLE.contains(column) {
                " nulls last"
            } else {
                ""
            };
            qb.push("leads.")
                .push(*column)
                .push(if *descending { " desc" } else { " asc" })
                .push(nulls)
                .push(", ");
        }
        qb.push("leads.id");
    }
}

fn parse_sort(raw: &str) -> Result<Vec<(&'static str, bool)>, ApiError> {
    let mut sort = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, descending) = match part.strip_prefix('-') {
            Some(name) => (name, true),
            None => (part.strip_prefix('+').unwrap_or(part), false),
        };
        let column = SORTS
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, column)| *column)
            .ok_or_else(|| {
                let allowed: Vec<&str> = SORTS.iter().map(|(key, _)| *key).collect();
                bad(format!(
                    "Unknown sort field `{name}`; allowed: {} (prefix with - for descending).",
                    allowed.join(", ")
                ))
            })?;
        sort.push((column, descending));
    }
    Ok(sort)
}

fn parse_uuid(key: &str, value: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(value).map_err(|_| bad(format!("{key} must be a UUID.")))
}

fn parse_int(key: &str, value: &str) -> Result<i64, ApiError> {
    value
        .parse()
        .map_err(|_| bad(format!("{key} must be a whole number.")))
}

fn parse_score(key: &str, value: &str) -> Result<i32, ApiError> {
    match value.parse::<i32>() {
        Ok(score) if (0..=100).contains(&score) => Ok(score),
        _ => Err(bad(format!("{key} must be a whole number from 0 to 100."))),
    }
}

fn parse_time(key: &str, value: &str) -> Result<OffsetDateTime, ApiError> {
    use time::format_description::well_known::Rfc3339;
    OffsetDateTime::parse(value, &Rfc3339)
        .or_else(|_| {
            time::Date::parse(
                value,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map(|d| d.midnight().assume_utc())
        })
        .map_err(|_| {
            bad(format!(
                "{key} must be a date (2026-11-25) or an RFC 3339 time."
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &[(&str, &str)]) -> Vec<(String, String)> {
        raw.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_every_documented_filter() {
        let f = LeadFilter::parse(&pairs(&[
            ("q", "acme"),
            ("status", "new,qualified"),
            ("tier", "hot"),
            ("min_score", "40"),
            ("created_after", "2026-01-01"),
            ("sort", "-score,created_at"),
            ("page", "2"),
            ("per_page", "50"),
            ("assigned_to", "me"),
        ]))
        .expect("valid");
        assert_eq!(f.statuses, vec![LeadStatus::New, LeadStatus::Qualified]);
        assert_eq!(f.sort, vec![("score", true), ("created_at", false)]);
        assert!(f.assigned_to_me);
        assert_eq!(f.page.limit_offset().expect("page"), (50, 50));
    }

    #[test]
    fn unknown_parameters_and_sort_fields_name_the_allowed_ones() {
        let err = LeadFilter::parse(&pairs(&[("colour", "red")])).expect_err("refused");
        assert!(err.to_string().contains("allowed: q, status"), "{err}");
        let err = LeadFilter::parse(&pairs(&[("sort", "-password")])).expect_err("refused");
        assert!(
            err.to_string().contains("allowed: score, created_at"),
            "{err}"
        );
        assert!(LeadFilter::parse(&pairs(&[("per_page", "101")])).is_err());
        assert!(LeadFilter::parse(&pairs(&[("min_score", "101")])).is_err());
    }
}

//! The lead as stored and shown, and the inputs that create and change it.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{error::ApiError, users::field};
use leadflow_platform::problem::FieldError;

/// Every column a lead is shown with; numeric columns cast to types sqlx decodes without extra features.
pub const COLUMNS: &str = "id, first_name, last_name, email, phone, company, job_title, source, status,
    budget::float8 as budget, interest, timeline, tags, custom, utm, repeat_customer, owner_id, created_by,
    score::int4 as score, tier, confidence, confidence_value::float8 as confidence_value, scored_at,
    last_activity_at, version, created_at, updated_at";

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Lead {
    pub id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub job_title: Option<String>,
    pub source: Option<String>,
    #[schema(value_type = LeadStatus)]
    pub status: String,
    pub budget: Option<f64>,
    pub interest: Option<String>,
    pub timeline: Option<String>,
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub custom: Value,
    #[schema(value_type = Object)]
    pub utm: Value,
    pub repeat_customer: bool,
    pub owner_id: Option<Uuid>,
    pub created_by: Option<Uuid>,
    /// 0-100, set by the scorer.
    pub score: Option<i32>,
    /// `hot`, `warm` or `cold`, set by the scorer.
    pub tier: Option<String>,
    pub confidence: Option<String>,
    pub confidence_value: Option<f64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub scored_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_activity_at: Option<OffsetDateTime>,
    /// Send it back in PATCH to refuse the change if someone else changed the lead meanwhile.
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    New,
    Contacted,
    Qualified,
    Won,
    Lost,
}

impl LeadStatus {
    pub const ALL: [&'static str; 5] = ["new", "contacted", "qualified", "won", "lost"];

    pub fn as_str(self) -> &'static str {
        match self {
            LeadStatus::New => "new",
            LeadStatus::Contacted => "contacted",
            LeadStatus::Qualified => "qualified",
            LeadStatus::Won => "won",
            LeadStatus::Lost => "lost",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "new" => Some(Self::New),
            "contacted" => Some(Self::Contacted),
            "qualified" => Some(Self::Qualified),
            "won" => Some(Self::Won),
            "lost" => Some(Self::Lost),
            _ => None,
        }
    }
}

/// `POST /leads` (and each CSV row). Score, tier and confidence are the scorer's: they are not
/// fields here, and sending them is refused as an unknown field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLead {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub job_title: Option<String>,
    pub source: Option<String>,
    pub status: Option<LeadStatus>,
    pub budget: Option<f64>,
    pub interest: Option<String>,
    pub timeline: Option<String>,
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub custom: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub utm: Option<Value>,
    pub repeat_customer: Option<bool>,
    /// Admins and managers only: assigns the new lead to this user. A sales rep's new lead is
    /// always their own.
    pub owner_id: Option<Uuid>,
}

/// `PATCH /leads/{id}`: only the fields present change; `null` clears an optional field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadPatch {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub company: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub job_title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub source: Option<Option<String>>,
    pub status: Option<LeadStatus>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    pub budget: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub interest: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub timeline: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub custom: Option<Value>,
    pub repeat_customer: Option<bool>,
    /// Refused: the owner changes through assignments, so every owner has an assignment.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Uuid>)]
    pub owner_id: Option<Option<Uuid>>,
    /// The version you read; a stale one gets 409 and changes nothing.
    pub version: Option<i32>,
}

/// Tells "absent" (`None`) from "null" (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Field rules shared by create, patch and CSV import; each problem is collected, not just the first.
#[derive(Default)]
pub struct Checks {
    pub errors: Vec<FieldError>,
}

impl Checks {
    pub fn text(&mut self, name: &str, value: Option<&str>, max: usize) -> Option<String> {
        let value = value.map(str::trim).filter(|v| !v.is_empty())?;
        if value.chars().count() > max {
            self.errors
                .push(field(name, format!("must be at most {max} characters")));
            return None;
        }
        if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            self.errors
                .push(field(name, "must not contain control characters"));
            return None;
        }
        Some(value.to_owned())
    }

    pub fn email(&mut self, value: Option<&str>) -> Option<String> {
        let raw = value.map(str::trim).filter(|v| !v.is_empty())?;
        let normalized = crate::admin::normalize_email(raw);
        if normalized.is_none() {
            self.errors
                .push(field("email", "must be an e-mail address"));
        }
        normalized
    }

    pub fn budget(&mut self, value: Option<f64>) -> Option<f64> {
        let value = value?;
        if !value.is_finite() || !(0.0..1e12).contains(&value) {
            self.errors
                .push(field("budget", "must be a non-negative amount below 10^12"));
            return None;
        }
        Some((value * 100.0).round() / 100.0)
    }

    pub fn tags(&mut self, value: Option<&[String]>) -> Option<Vec<String>> {
        let tags = value?;
        if tags.len() > 50 {
            self.errors.push(field("tags", "at most 50 tags"));
            return None;
        }
        let mut clean: Vec<String> = Vec::with_capacity(tags.len());
        for tag in tags {
            let tag = tag.trim().to_lowercase();
            if tag.is_empty() || tag.chars().count() > 50 {
                self.errors
                    .push(field("tags", "each tag must be 1 to 50 characters"));
                return None;
            }
            if !clean.contains(&tag) {
                clean.push(tag);
            }
        }
        Some(clean)
    }

    pub fn object(&mut self, name: &str, value: Option<&Value>) -> Option<Value> {
        let value = value?;
        if !value.is_object() {
            self.errors.push(field(name, "must be a JSON object"));
            return None;
        }
        if value.to_string().len() > 16 * 1024 {
            self.errors.push(field(name, "must be at most 16 KiB"));
            return None;
        }
        Some(value.clone())
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// A `NewLead` with every field checked and normalised.
#[derive(Debug, Clone, Serialize)]
pub struct ValidLead {
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub job_title: Option<String>,
    pub source: Option<String>,
    pub status: LeadStatus,
    pub budget: Option<f64>,
    pub interest: Option<String>,
    pub timeline: Option<String>,
    pub tags: Vec<String>,
    pub custom: Value,
    pub utm: Value,
    pub repeat_customer: bool,
    pub owner_id: Option<Uuid>,
}

impl NewLead {
    pub fn validate(&self) -> Result<ValidLead, ApiError> {
        let mut c = Checks::default();
        let lead = ValidLead {
            first_name: c
                .text("first_name", self.first_name.as_deref(), 100)
                .unwrap_or_default(),
            last_name: c
                .text("last_name", self.last_name.as_deref(), 100)
                .unwrap_or_default(),
            email: c.email(self.email.as_deref()),
            phone: c.text("phone", self.phone.as_deref(), 50),
            company: c.text("company", self.company.as_deref(), 200),
            job_title: c.text("job_title", self.job_title.as_deref(), 200),
            source: c.text("source", self.source.as_deref(), 100),
            status: self.status.unwrap_or(LeadStatus::New),
            budget: c.budget(self.budget),
            interest: c.text("interest", self.interest.as_deref(), 500),
            timeline: c.text("timeline", self.timeline.as_deref(), 100),
            tags: c.tags(self.tags.as_deref()).unwrap_or_default(),
            custom: c
                .object("custom", self.custom.as_ref())
                .unwrap_or_else(|| Value::Object(Default::default())),
            utm: c
                .object("utm", self.utm.as_ref())
                .unwrap_or_else(|| Value::Object(Default::default())),
            repeat_customer: self.repeat_customer.unwrap_or(false),
            owner_id: self.owner_id,
        };
        let identified = !lead.first_name.is_empty()
            || !lead.last_name.is_empty()
            || lead.email.is_some()
            || lead.company.is_some();
        if !identified && c.errors.is_empty() {
            c.errors.push(field(
                "name",
                "give at least a name, an e-mail or a company",
            ));
        }
        c.finish()?;
        Ok(lead)
    }
}

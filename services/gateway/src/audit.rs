//! The audit log: every login attempt and every data change, with who, what, when, from where and
//! the request id. Data changes are recorded in the same transaction as the change, together with
//! the domain event for the outbox, so all three commit or none does.

use leadflow_events::Envelope;
use leadflow_platform::{outbox, telemetry::current_traceparent};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{extract::Meta, policy::Actor};

pub struct Entry<'a> {
    pub actor: Option<Uuid>,
    pub actor_email: Option<&'a str>,
    pub action: &'a str,
    pub entity_type: Option<&'a str>,
    pub entity_id: Option<Uuid>,
    pub success: bool,
    pub details: Value,
}

pub async fn record(conn: &mut PgConnection, meta: &Meta, entry: Entry<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "insert into audit_log (actor_id, actor_email, action, entity_type, entity_id, success,
                                request_id, ip, user_agent, details)
         values ($1, $2, $3, $4, $5, $6, $7, $8::inet, $9, $10)",
    )
    .bind(entry.actor)
    .bind(entry.actor_email)
    .bind(entry.action)
    .bind(entry.entity_type)
    .bind(entry.entity_id)
    .bind(entry.success)
    .bind(meta.request_id.as_deref())
    .bind(meta.ip.to_string())
    .bind(meta.user_agent.as_deref())
    .bind(entry.details)
    .execute(conn)
    .await?;
    Ok(())
}

/// One data change: an audit row, and (when others must hear of it) its domain event.
pub struct Change<'a> {
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: Uuid,
    pub details: Value,
    /// Subject of the domain event (e.g. `leads.created`), its lead and payload.
    pub event: Option<(&'a str, Option<Uuid>, Value)>,
}

pub async fn change(
    conn: &mut PgConnection,
    actor: &Actor,
    meta: &Meta,
    change: Change<'_>,
) -> sqlx::Result<()> {
    record(
        conn,
        meta,
        Entry {
            actor: Some(actor.id),
            actor_email: None,
            action: change.action,
            entity_type: Some(change.entity_type),
            entity_id: Some(change.entity_id),
            success: true,
            details: change.details,
        },
    )
    .await?;
    if let Some((subject, lead_id, data)) = change.event {
        let mut event = Envelope::new(subject, "gateway")
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?
            .with_data(data)
            .with_traceparent(current_traceparent());
        event.lead_id = lead_id;
        outbox::enqueue(conn, &event).await?;
    }
    Ok(())
}

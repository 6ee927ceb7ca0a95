//! Who hears about an event, decided from the event alone (no I/O), so the rules are tested
//! directly: the new assignee of a created assignment; both sides of a transfer; the assigner of a
//! completed one; the owner of a lead that has just turned Hot. Nobody is told about what they did
//! themselves.

use leadflow_events::{Envelope, subjects};
use serde_json::{Value, json};
use uuid::Uuid;

pub const ASSIGNED: &str = "assignment.created";
pub const TRANSFERRED_IN: &str = "assignment.transferred_in";
pub const TRANSFERRED_OUT: &str = "assignment.transferred_out";
pub const COMPLETED: &str = "assignment.completed";
pub const LEAD_HOT: &str = "lead.hot";

/// One notification to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub user_id: Uuid,
    pub kind: &'static str,
    pub payload: Value,
}

/// What an event asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub notifications: Vec<Planned>,
    /// A lead turned Hot: managers are told too when the notifier is configured so.
    pub hot_lead: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct Unreadable(pub String);

/// The notifications `event` calls for; an event of another type calls for none.
pub fn plan(event: &Envelope) -> Result<Plan, Unreadable> {
    let data = &event.data;
    let base = |extra: Value| {
        let mut payload = json!({
            "event_id": event.id,
            "event_type": event.kind,
            "lead_id": event.lead_id,
        });
        if let (Some(target), Some(extra)) = (payload.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                target.insert(k.clone(), v.clone());
            }
        }
        payload
    };
    let mut plan = Plan::default();
    let mut add = |user: Option<Uuid>, actor: Option<Uuid>, kind: &'static str, payload: Value| {
        if let Some(user) = user
            && Some(user) != actor
            && !plan.notifications.iter().any(|p| p.user_id == user)
        {
            plan.notifications.push(Planned {
                user_id: user,
                kind,
                payload,
            });
        }
    };
    match event.kind.as_str() {
        subjects::ASSIGNMENTS_CREATED => {
            let assignee = required(data, "assignee_id")?;
            add(
                Some(assignee),
                uuid(data, "assigned_by"),
                ASSIGNED,
                base(pick(data, &["assignment_id", "assigned_by", "note"])),
            );
        }
        subjects::ASSIGNMENTS_TRANSFERRED => {
            let to = required(data, "assignee_id")?;
            let actor = uuid(data, "assigned_by");
            let payload = base(pick(
                data,
                &[
                    "assignment_id",
                    "previous_assignment_id",
                    "previous_assignee_id",
                    "assignee_id",
                    "assigned_by",
                    "note",
                ],
            ));
            add(Some(to), actor, TRANSFERRED_IN, payload.clone());
            add(
                uuid(data, "previous_assignee_id"),
                actor,
                TRANSFERRED_OUT,
                payload,
            );
        }
        subjects::ASSIGNMENTS_COMPLETED => {
            add(
                uuid(data, "assigned_by"),
                uuid(data, "completed_by"),
                COMPLETED,
                base(pick(
                    data,
                    &[
                        "assignment_id",
                        "assignee_id",
                        "completed_by",
                        "assigned_by",
                    ],
                )),
            );
        }
        subjects::SCORES_UPDATED => {
            let old = data.get("old_tier").and_then(Value::as_str);
            let new = data.get("new_tier").and_then(Value::as_str);
            // Only the crossing counts: a lead that stays Hot while its score moves is old news.
            if new == Some("hot") && old != Some("hot") {
                plan.hot_lead = true;
                add(
                    uuid(data, "owner_id"),
                    None,
                    LEAD_HOT,
                    base(pick(
                        data,
                        &["score_id", "old_score", "new_score", "old_tier", "new_tier"],
                    )),
                );
            }
        }
        _ => {}
    }
    Ok(plan)
}

/// What outgoing webhooks receive for `event`, whoever its recipients are: its type (one of the
/// gateway's `EVENT_TYPES`) and body.
pub fn webhook_event(event: &Envelope, plan: &Plan) -> Option<(&'static str, Value)> {
    let kind = match event.kind.as_str() {
        subjects::ASSIGNMENTS_CREATED => "assignment.created",
        subjects::ASSIGNMENTS_TRANSFERRED => "assignment.transferred",
        subjects::ASSIGNMENTS_COMPLETED => "assignment.completed",
        subjects::SCORES_UPDATED if plan.hot_lead => "lead.hot",
        _ => return None,
    };
    let mut data = serde_json::Map::new();
    data.insert("event_id".into(), json!(event.id));
    data.insert("lead_id".into(), json!(event.lead_id));
    if let Some(fields) = event.data.as_object() {
        for (k, v) in fields {
            data.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let time = event
        .time
        .format(&time::format_description::well_known::Rfc3339)
        .ok();
    Some((kind, json!({"type": kind, "timestamp": time, "data": data})))
}

/// The payload of the Hot notification a manager gets (the owner's, addressed to them).
pub fn for_manager(plan: &Plan, event: &Envelope, manager: Uuid) -> Planned {
    let payload = plan
        .notifications
        .first()
        .map(|p| p.payload.clone())
        .unwrap_or_else(
            || json!({"event_id": event.id, "event_type": event.kind, "lead_id": event.lead_id}),
        );
    Planned {
        user_id: manager,
        kind: LEAD_HOT,
        payload,
    }
}

fn uuid(data: &Value, field: &str) -> Option<Uuid> {
    data.get(field)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

fn required(data: &Value, field: &str) -> Result<Uuid, Unreadable> {
    uuid(data, field).ok_or_else(|| Unreadable(format!("data.{field} is missing or not a uuid")))
}

fn pick(data: &Value, fields: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for field in fields {
        if let Some(v) = data.get(*field) {
            out.insert((*field).to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: Value) -> Envelope {
        Envelope::new(kind, "test")
            .expect("valid")
            .with_lead(Uuid::new_v4())
            .with_data(data)
    }

    fn users(plan: &Plan) -> Vec<(Uuid, &'static str)> {
        plan.notifications
            .iter()
            .map(|p| (p.user_id, p.kind))
            .collect()
    }

    #[test]
    fn a_new_assignment_tells_the_assignee_only() {
        let (rep, manager) = (Uuid::new_v4(), Uuid::new_v4());
        let e = event(
            subjects::ASSIGNMENTS_CREATED,
            json!({"assignee_id": rep, "assigned_by": manager, "note": "call today"}),
        );
        let plan = plan(&e).expect("readable");
        assert_eq!(users(&plan), vec![(rep, ASSIGNED)]);
        assert_eq!(plan.notifications[0].payload["note"], "call today");
        assert_eq!(plan.notifications[0].payload["event_id"], json!(e.id));
    }

    #[test]
    fn a_transfer_tells_both_sides_and_a_completion_the_assigner() {
        let (from, to, manager) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let e = event(
            subjects::ASSIGNMENTS_TRANSFERRED,
            json!({"assignee_id": to, "previous_assignee_id": from, "assigned_by": manager}),
        );
        assert_eq!(
            users(&plan(&e).expect("readable")),
            vec![(to, TRANSFERRED_IN), (from, TRANSFERRED_OUT)]
        );
        let e = event(
            subjects::ASSIGNMENTS_COMPLETED,
            json!({"assignee_id": to, "assigned_by": manager, "completed_by": to}),
        );
        assert_eq!(
            users(&plan(&e).expect("readable")),
            vec![(manager, COMPLETED)]
        );
    }

    #[test]
    fn nobody_is_told_about_what_they_did_themselves() {
        let manager = Uuid::new_v4();
        let e = event(
            subjects::ASSIGNMENTS_CREATED,
            json!({"assignee_id": manager, "assigned_by": manager}),
        );
        assert!(plan(&e).expect("readable").notifications.is_empty());
        let e = event(
            subjects::ASSIGNMENTS_COMPLETED,
            json!({"assigned_by": manager, "completed_by": manager}),
        );
        assert!(plan(&e).expect("readable").notifications.is_empty());
    }

    #[test]
    fn only_crossing_into_hot_notifies_the_owner() {
        let owner = Uuid::new_v4();
        let scored = |old: &str, new: &str| {
            plan(&event(
                subjects::SCORES_UPDATED,
                json!({"owner_id": owner, "old_tier": old, "new_tier": new, "old_score": 50, "new_score": 80}),
            ))
            .expect("readable")
        };
        let rise = scored("warm", "hot");
        assert!(rise.hot_lead);
        assert_eq!(users(&rise), vec![(owner, LEAD_HOT)]);
        assert!(scored("hot", "hot").notifications.is_empty());
        assert!(!scored("hot", "hot").hot_lead);
        assert!(scored("cold", "warm").notifications.is_empty());
        assert!(scored("hot", "warm").notifications.is_empty());
        // A lead scored for the first time straight into Hot has no old tier.
        let first = plan(&event(
            subjects::SCORES_UPDATED,
            json!({"owner_id": owner, "old_tier": null, "new_tier": "hot"}),
        ))
        .expect("readable");
        assert_eq!(users(&first), vec![(owner, LEAD_HOT)]);
    }

    #[test]
    fn an_assignment_without_an_assignee_is_unreadable() {
        let e = event(subjects::ASSIGNMENTS_CREATED, json!({"assigned_by": "x"}));
        assert!(plan(&e).is_err());
        assert!(
            plan(&event("leads.created", json!({})))
                .expect("ignored")
                .notifications
                .is_empty()
        );
    }
}

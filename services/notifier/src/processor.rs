//! Events in, notifications out: one transaction per batch writes each recipient's notification
//! once (and queues its e-mail and webhook deliveries with it), then the new ones are pushed. The
//! caller acks only after this returns, so a crash means redelivery, and redelivery writes and
//! pushes nothing twice.

use std::sync::Arc;

use leadflow_events::Envelope;
use leadflow_platform::Platform;
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    email, hub,
    recipients::{self, Plan},
    store::{self, Notification},
    webhooks,
};

pub struct Processor {
    pub platform: Arc<Platform>,
    pub notify_managers_on_hot: bool,
    /// Wakes this process's webhook deliverer when a batch queued deliveries.
    pub webhooks_queued: Arc<Notify>,
    /// Set when `SMTP_URL` is: e-mail is queued with the notifications and this wakes the sender.
    pub email_queued: Option<Arc<Notify>>,
}

/// A notification written by this batch, with the time of the event that caused it.
pub struct Written {
    pub notification: Notification,
    pub event_time: OffsetDateTime,
}

impl Processor {
    /// Writes the notifications `events` (already checked readable, with their plans) call for.
    pub async fn process(&self, events: &[(Envelope, Plan)]) -> sqlx::Result<Vec<Written>> {
        let mut tx = self.platform.db.pool().begin().await?;
        let managers = if self.notify_managers_on_hot && events.iter().any(|(_, p)| p.hot_lead) {
            store::managers(&mut tx).await?
        } else {
            Vec::new()
        };
        let mut recipients: Vec<Uuid> = events
            .iter()
            .flat_map(|(_, plan)| plan.notifications.iter().map(|p| p.user_id))
            .chain(managers.iter().copied())
            .collect();
        store::lock_recipients(&mut tx, &mut recipients).await?;
        let mut written = Vec::new();
        let mut queued = 0;
        for (event, plan) in events {
            if let Some((kind, body)) = recipients::webhook_event(event, plan) {
                queued += webhooks::enqueue(&mut tx, event.id, kind, &body).await?;
            }
            let mut planned = plan.notifications.clone();
            if plan.hot_lead {
                for manager in &managers {
                    if !planned.iter().any(|p| p.user_id == *manager) {
                        planned.push(recipients::for_manager(plan, event, *manager));
                    }
                }
            }
            for notification in store::insert(&mut tx, event.id, &planned).await? {
                written.push(Written {
                    notification,
                    event_time: event.time,
                });
            }
        }
        let mut mailed = 0;
        if self.email_queued.is_some() {
            let new: Vec<&Notification> = written.iter().map(|w| &w.notification).collect();
            mailed = email::enqueue(&mut tx, &new).await?;
        }
        tx.commit().await?;
        if queued > 0 {
            self.webhooks_queued.notify_one();
        }
        if let (true, Some(wake)) = (mailed > 0, &self.email_queued) {
            wake.notify_one();
        }
        Ok(written)
    }

    /// Pushes what a batch wrote to every process's connections.
    pub async fn push(&self, written: &[Written]) {
        for w in written {
            let n = &w.notification;
            if let Err(e) = hub::publish(&self.platform, n.user_id, n.to_json(), w.event_time).await
            {
                // The row is committed: the client gets it on its next resume.
                tracing::warn!(error = %e, "publishing a notification push failed");
            }
        }
    }
}

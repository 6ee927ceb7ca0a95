//! The notifier's part of a durable consumer (the loop, acks and dead letters are
//! `leadflow_platform::consume`'s): an event is read with the plan of who hears about it, a batch
//! is written in one transaction, and what it wrote is pushed once it is committed.

use async_nats::jetstream::Message;
use leadflow_events::Envelope;
use leadflow_platform::consume::Handler;

use crate::{
    processor::{Processor, Written},
    recipients::{self, Plan},
};

/// Most messages taken into one transaction.
pub const BATCH: usize = 200;

impl Handler for Processor {
    type Item = (Envelope, Plan);
    type Done = Vec<Written>;

    fn parse(&self, message: &Message) -> Result<(Envelope, Plan), String> {
        let event = Envelope::from_json(&message.payload).map_err(|e| e.to_string())?;
        let plan = recipients::plan(&event).map_err(|e| e.to_string())?;
        Ok((event, plan))
    }

    async fn process(
        &self,
        consumer: &str,
        events: &[(Envelope, Plan)],
    ) -> sqlx::Result<Vec<Written>> {
        let written = Processor::process(self, events).await?;
        tracing::debug!(
            consumer,
            events = events.len(),
            notifications = written.len(),
            "batch done"
        );
        Ok(written)
    }

    async fn committed(&self, written: Vec<Written>) {
        self.push(&written).await;
    }
}

//! `scorer.rescore` request/reply: the gateway's `POST /api/leads/{id}/score` asks, any scorer
//! instance answers (a queue group) with what it computed and recorded.

use std::sync::Arc;

use futures::StreamExt as _;
use leadflow_events::subjects;
use leadflow_platform::Platform;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::processor::{Processor, rescore};

#[derive(Deserialize)]
struct Request {
    lead_id: Uuid,
}

/// Answers rescore requests until shutdown.
pub async fn respond(platform: Arc<Platform>, processor: Arc<Processor>) {
    let token = platform.shutdown_token();
    let subject = platform.bus.namespace().subject(subjects::RESCORE);
    let mut requests = loop {
        match platform
            .bus
            .client()
            .queue_subscribe(subject.clone(), "scorer".into())
            .await
        {
            Ok(subscription) => break subscription,
            Err(e) => {
                tracing::warn!(error = %e, "subscribing to rescore requests failed; retrying");
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    };
    loop {
        let message = tokio::select! {
            () = token.cancelled() => return,
            message = requests.next() => match message { Some(m) => m, None => return },
        };
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let answer = match serde_json::from_slice::<Request>(&message.payload) {
            Ok(request) => match score_now(&processor, request.lead_id).await {
                Ok(Some(score)) => json!({ "lead_id": request.lead_id, "score": score }),
                Ok(None) => json!({ "error": "not_found" }),
                Err(e) => {
                    tracing::warn!(error = %leadflow_platform::error_chain(&e), "rescore failed");
                    json!({ "error": "unavailable" })
                }
            },
            Err(_) => json!({ "error": "bad_request" }),
        };
        if let Err(e) = platform
            .bus
            .client()
            .publish(reply, answer.to_string().into())
            .await
        {
            tracing::debug!(error = %e, "answering a rescore request failed");
        }
    }
}

async fn score_now(processor: &Processor, lead: Uuid) -> sqlx::Result<Option<crate::model::Score>> {
    let mut tx = processor.pool.begin().await?;
    let exists: bool = sqlx::query_scalar(
        "select exists (select 1 from leads where id = $1 and deleted_at is null)",
    )
    .bind(lead)
    .fetch_one(&mut *tx)
    .await?;
    if !exists {
        return Ok(None);
    }
    let score = rescore(&mut tx, lead, None, &processor.config).await?;
    tx.commit().await?;
    Ok(Some(score))
}

//! `leadflow rescore --all`: re-scores every lead after a model change. Progress is kept in
//! `rescore_runs`, so an interrupted run resumes where it stopped instead of starting over.

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    model::{Config, MODEL_VERSION},
    processor::rescore,
};

const CHUNK: i64 = 200;

pub struct Progress {
    pub run: Uuid,
    pub done: i64,
    pub total: i64,
    pub resumed: bool,
}

/// Re-scores all leads, calling `report` after each chunk. Returns the finished run.
pub async fn rescore_all(
    pool: &PgPool,
    config: &Config,
    mut report: impl FnMut(&Progress),
) -> sqlx::Result<Progress> {
    let unfinished: Option<(Uuid, Option<Uuid>, i32, i32)> = sqlx::query_as(
        "select id, last_lead_id, done, total from rescore_runs
         where finished_at is null and model_version = $1 order by started_at desc limit 1",
    )
    .bind(MODEL_VERSION)
    .fetch_optional(pool)
    .await?;
    let (run, mut last, mut done, total, resumed) = match unfinished {
        Some((run, last, done, total)) => (run, last, i64::from(done), i64::from(total), true),
        None => {
            let total: i64 =
                sqlx::query_scalar("select count(*) from leads where deleted_at is null")
                    .fetch_one(pool)
                    .await?;
            let run: Uuid = sqlx::query_scalar(
                "insert into rescore_runs (model_version, total) values ($1, $2) returning id",
            )
            .bind(MODEL_VERSION)
            .bind(i32::try_from(total).unwrap_or(i32::MAX))
            .fetch_one(pool)
            .await?;
            (run, None, 0, total, false)
        }
    };
    loop {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "select id from leads where deleted_at is null and ($1::uuid is null or id > $1) order by id limit $2",
        )
        .bind(last)
        .bind(CHUNK)
        .fetch_all(pool)
        .await?;
        let Some(&chunk_last) = ids.last() else { break };
        // One transaction per chunk, progress included: a crash repeats at most this chunk.
        let mut tx = pool.begin().await?;
        for id in &ids {
            rescore(&mut tx, *id, None, config).await?;
        }
        done += ids.len() as i64;
        sqlx::query("update rescore_runs set last_lead_id = $2, done = $3 where id = $1")
            .bind(run)
            .bind(chunk_last)
            .bind(i32::try_from(done).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        last = Some(chunk_last);
        report(&Progress {
            run,
            done,
            total: total.max(done),
            resumed,
        });
    }
    sqlx::query("update rescore_runs set finished_at = now() where id = $1")
        .bind(run)
        .execute(pool)
        .await?;
    Ok(Progress {
        run,
        done,
        total: total.max(done),
        resumed,
    })
}

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, PgConnection, migrate::Migrator};

use super::{ErrorType, classify};
use crate::{config::DatabaseUrl, retry::backoff};

/// The schema, embedded at compile time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

const DUPLICATE_DATABASE: &str = "42P04";
const DATABASE_MISSING: &str = "3D000";

/// Creates the database named in the URL when it does not exist yet. Returns whether it did.
/// Connects to the `postgres` database only when ours is missing, since managed servers often
/// deny application roles access to it.
pub async fn ensure_database(url: &DatabaseUrl) -> anyhow::Result<bool> {
    match PgConnection::connect(url.expose()).await {
        Ok(conn) => {
            let _ = conn.close().await;
            return Ok(false);
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(DATABASE_MISSING) => {}
        Err(e) => return Err(e).with_context(|| format!("connecting to {url}")),
    }
    let name = url.database_name();
    let admin = url.with_database("postgres");
    let mut conn = PgConnection::connect(admin.expose())
        .await
        .with_context(|| format!("connecting to {admin} to check that database {name:?} exists"))?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .context("checking whether the database exists")?;
    if exists {
        return Ok(false);
    }
    // Identifiers cannot be bound as parameters; quote it the way PostgreSQL does.
    let statement = format!("create database \"{}\"", name.replace('"', "\"\""));
    // Audited: the name is quoted as an identifier above.
    match sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(&mut conn)
        .await
    {
        Ok(_) => Ok(true),
        // another process created it between our check and our create
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(DUPLICATE_DATABASE) => {
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("creating database {name:?}")),
    }
}

/// How long `migrate` waits for a database that is still starting (as in `docker compose up`).
const STARTUP_WAIT: Duration = Duration::from_secs(15);

/// Creates the database if needed and applies every pending migration. Safe to run from several
/// processes at once: sqlx takes an advisory lock. A server that refuses connections, times out
/// or is not resolvable yet is retried with back-off for a few seconds first.
pub async fn migrate(url: &DatabaseUrl) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP_WAIT;
    let mut delays = backoff();
    loop {
        match migrate_once(url).await {
            Err(err) if Instant::now() < deadline && is_starting_up(&err) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(1));
                tracing::warn!(error = %crate::error_chain(&*err), retry_in = ?delay, "waiting for the database");
                tokio::time::sleep(delay).await;
            }
            result => return result,
        }
    }
}

fn is_starting_up(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<sqlx::Error>())
        .any(|e| {
            matches!(
                classify(e),
                ErrorType::ConnectionRefused | ErrorType::Timeout | ErrorType::DnsResolutionFailure
            ) || e.as_database_error().and_then(|d| d.code()).as_deref() == Some("57P03")
        })
}

async fn migrate_once(url: &DatabaseUrl) -> anyhow::Result<()> {
    if ensure_database(url).await? {
        tracing::info!(database = url.database_name(), "created database");
    }
    // A one-connection pool rather than a bare connection: `Migrator::run` on `&mut PgConnection`
    // is not `Send` enough to be spawned.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url.expose())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let applied = MIGRATOR.run(&pool).await.context("applying migrations");
    pool.close().await;
    applied
}

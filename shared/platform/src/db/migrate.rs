use anyhow::Context;
use sqlx::{Connection, PgConnection, migrate::Migrator};

use crate::config::DatabaseUrl;

/// The schema, embedded at compile time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

const DUPLICATE_DATABASE: &str = "42P04";

/// Creates the database named in the URL when it does not exist yet. Returns whether it did.
pub async fn ensure_database(url: &DatabaseUrl) -> anyhow::Result<bool> {
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

/// Creates the database if needed and applies every pending migration. Safe to run from several
/// processes at once: sqlx takes an advisory lock.
pub async fn migrate(url: &DatabaseUrl) -> anyhow::Result<()> {
    if ensure_database(url).await? {
        tracing::info!(database = url.database_name(), "created database");
    }
    let mut conn = PgConnection::connect(url.expose())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    MIGRATOR
        .run(&mut conn)
        .await
        .context("applying migrations")?;
    let _ = conn.close().await;
    Ok(())
}

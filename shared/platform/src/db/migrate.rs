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
/// processes at once: one migrates while the others wait their turn ([`take_turn`]). A server that
/// refuses connections, times out or is not resolvable yet is retried with back-off for a few
/// seconds first.
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
    // One connection, not a pool, from the lock to the end: the lock belongs to the session, and
    // closing the connection releases it, whatever happened.
    let mut conn = PgConnection::connect(url.expose())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let applied = match take_turn(&mut conn).await {
        Ok(()) => {
            // The same migrations with sqlx's locking off; the rest is sqlx's defaults (the
            // `_sqlx_migrations` table), as `migrate!` gives `MIGRATOR` here. `run_direct`, not
            // `run`: `run` takes the connection through `Acquire`, whose future is not `Send`.
            let mut migrator = Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
            migrator.set_locking(false);
            migrator
                .run_direct(None, &mut conn, false)
                .await
                .context("applying migrations")
        }
        Err(e) => Err(e),
    };
    let _ = conn.close().await;
    applied
}

/// How often a migrator waiting for another asks again, and says that it still waits.
const TURN_POLL: Duration = Duration::from_millis(200);
const TURN_REPORT: Duration = Duration::from_secs(30);

/// Waits until no other process is migrating this database, then holds the session-level advisory
/// lock that says so, on `conn`, until it closes.
///
/// sqlx's own locking waits inside `pg_advisory_lock`, and a statement that waits holds a snapshot.
/// `create index concurrently` waits for every snapshot older than its own, so a migration building
/// an index and a second migrator waiting its turn deadlocked, and PostgreSQL cancelled one of
/// them: when it was the build, its invalid index stayed behind and every later run failed on it.
/// Asking with `pg_try_advisory_lock` holds no snapshot between questions. The id is the one sqlx
/// computes, so a migrator of an earlier release still takes turns with this one.
async fn take_turn(conn: &mut PgConnection) -> anyhow::Result<()> {
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&mut *conn)
        .await
        .context("reading the database's name")?;
    let lock = sqlx_lock_id(&database);
    let mut next_report = Instant::now();
    loop {
        let taken: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(lock)
            .fetch_one(&mut *conn)
            .await
            .context("asking whether another process is migrating")?;
        if taken {
            return Ok(());
        }
        if Instant::now() >= next_report {
            // Which backend holds it, so a stuck one can be found (`pg_stat_activity`).
            let holder: Option<i32> = sqlx::query_scalar(
                "select pid from pg_locks where locktype = 'advisory' and granted
                   and database = (select oid from pg_database where datname = current_database())
                   and ((classid::int8 << 32) | objid::int8) = $1",
            )
            .bind(lock)
            .fetch_optional(&mut *conn)
            .await
            .unwrap_or(None);
            tracing::info!(
                database,
                holder_pid = holder,
                "another process is migrating this database; waiting for it"
            );
            next_report = Instant::now() + TURN_REPORT;
        }
        tokio::time::sleep(TURN_POLL).await;
    }
}

/// The advisory lock id sqlx 0.9 takes for migrating `database` (`generate_lock_id` in
/// sqlx-postgres), kept equal so that migrators of every release exclude each other.
fn sqlx_lock_id(database: &str) -> i64 {
    const CRC_IEEE: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    0x3d32ad9e * i64::from(CRC_IEEE.checksum(database.as_bytes()))
}

#[cfg(test)]
mod tests {
    /// The id sqlx 0.9.0's own migrator held for a database named `leadflow`, read from
    /// `pg_locks` while it waited on a locked `_sqlx_migrations` (classid 928314191, objid
    /// 1322904094).
    #[test]
    fn the_lock_id_is_the_one_sqlx_takes() {
        assert_eq!(super::sqlx_lock_id("leadflow"), 3_987_079_092_080_601_630);
    }
}

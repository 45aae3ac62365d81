//! SQLite: one writer at a time, so a write transaction takes the write lock up front; busy
//! and locked errors are retried; durability follows `StoreConfig::with_sqlite_synchronous`.

use std::error::Error as StdError;
use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::MigrateError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteError, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection as _, Pool, Sqlite, Transaction};
use uuid::Uuid;

use super::sql::*;
use super::*;
use crate::audit::sql::*;

/// IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so the transaction
/// never has to upgrade a read lock, which SQLite answers with SQLITE_BUSY at once instead of
/// waiting.
pub(super) const SQLITE_BEGIN: &str = "BEGIN IMMEDIATE";

impl SqlDialect for Sqlite {
    fn dialect(_conn: &Self::Connection) -> Dialect {
        Dialect::Sqlite
    }

    fn pool_dialect(_pool: &Pool<Self>) -> Dialect {
        Dialect::Sqlite
    }
}

impl sealed::Protocol for Sqlite {
    async fn migrate(pool: &Pool<Self>) -> Result<(), MigrateError> {
        Dialect::Sqlite.migrator().run(pool).await
    }

    fn migration_versions(_pool: &Pool<Self>) -> Vec<i64> {
        Dialect::Sqlite.migration_versions()
    }

    async fn connect(url: &str, config: &StoreConfig) -> Result<Pool<Self>, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.sqlite_synchronous() {
                crate::SqliteSynchronous::Full => SqliteSynchronous::Full,
                crate::SqliteSynchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(config.lock_timeout())
            .foreign_keys(true);
        SqlitePoolOptions::new()
            .acquire_timeout(config.acquire_timeout())
            .connect_with(options)
            .await
    }

    async fn begin_write<'c>(
        conn: &'c mut Self::Connection,
        _statements: Statements,
        _lock_timeout: Duration,
        _tenant: &TenantId,
    ) -> Result<Transaction<'c, Self>, sqlx::Error> {
        conn.begin_with(SQLITE_BEGIN).await
    }

    async fn begin_for(
        pool: &Pool<Self>,
        _statements: Statements,
        _tenant: &TenantId,
    ) -> Result<Transaction<'static, Self>, sqlx::Error> {
        pool.begin().await
    }

    shared_statements!();

    fn driver_error<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e dyn DatabaseError> {
        error
            .downcast_ref::<SqliteError>()
            .map(|error| error as &dyn DatabaseError)
    }

    fn is_transient(error: &dyn DatabaseError) -> bool {
        // The primary result code of an extended one is its low byte: SQLITE_BUSY, SQLITE_LOCKED.
        let primary = error
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .map(|code| code & 0xff);
        matches!(primary, Some(5 | 6))
    }

    fn is_lock_timeout(error: &dyn DatabaseError) -> bool {
        // One writer at a time: a write waits for the write lock at `BEGIN IMMEDIATE`, at most
        // the busy timeout (the lock timeout), then gets SQLITE_BUSY: another connection (a
        // twin in another process, or another write) held it all that time. SQLITE_BUSY_SNAPSHOT
        // (517) is a stale read snapshot, not a wait: transient.
        error.code().as_deref() == Some("5")
    }
}

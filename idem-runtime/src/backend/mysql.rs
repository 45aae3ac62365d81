//! MySQL 8 and MariaDB 10.6+ (InnoDB): how the protocol meets MySQL's differences. The
//! statements themselves, in MySQL's words, are in [`super::sql`].
//!
//! - Parameters are `?`, bound in the order they appear, and there is no `RETURNING` on
//!   `UPDATE` (none at all on MySQL): each statement binds the values of its PostgreSQL twin in
//!   the same order, and a `RETURNING` becomes a second statement or `LAST_INSERT_ID`.
//! - There is no `ON CONFLICT ... DO UPDATE ... WHERE`: the claim is `INSERT ... ON DUPLICATE
//!   KEY UPDATE` that hands the row's attempt id to `LAST_INSERT_ID(expr)` (MySQL and MariaDB
//!   alike; neither's `RETURNING` serves here). It reads the new row through `VALUES(col)`: MySQL
//!   8.0.20 deprecated it (warning 1287) for a row alias that MariaDB does not parse.
//! - A write transaction runs at READ COMMITTED, as on PostgreSQL: no gap or next-key locks on
//!   the keys' unique index between twins of different keys, and the read after a lost claim
//!   sees the winner's commit. A twin's uncommitted row makes the claim wait, at most
//!   `innodb_lock_wait_timeout` (the lock timeout, in whole seconds): error 1205 is a twin in
//!   flight; a deadlock (1213) is rolled back by the server and retried.
//! - The database's clock is `UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3))`, in UTC: every connection
//!   sets `time_zone = '+00:00'` (sqlx's default for MySQL, which idem keeps).
//! - DDL commits implicitly: each migration is idempotent per table, and the migrator records
//!   each one only after it ran.

use std::error::Error as StdError;
use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::MigrateError;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions, MySqlQueryResult};
use sqlx::{AssertSqlSafe, Connection as _, MySql, Pool, Transaction};
use uuid::Uuid;

use super::sql::*;
use super::*;
use crate::audit::sql::*;

/// One round trip: the lock timeout (whole seconds, at least one) bounds the wait on a twin's
/// claim, and the transaction runs at READ COMMITTED. MySQL has no transaction-scoped setting,
/// so the session's own lock wait timeout is saved in `@idem_lock_wait` (unless a write that
/// never ended saved it already) and set back before the transaction ends
/// ([`MYSQL_END_WRITE`]): the pooled connection goes back as the application left it.
pub(super) fn mysql_begin(lock_timeout: Duration) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!(
        "SET @idem_lock_wait = COALESCE(@idem_lock_wait, @@SESSION.innodb_lock_wait_timeout), \
         SESSION innodb_lock_wait_timeout = {}; \
         SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION",
        lock_timeout.as_millis().div_ceil(1000).max(1)
    ))
}

/// The MySQL error number of a database error, if it is MySQL's.
fn error_number(error: &dyn DatabaseError) -> Option<u16> {
    error
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(MySqlDatabaseError::number)
}

impl SqlDialect for MySql {
    fn dialect(_conn: &Self::Connection) -> Dialect {
        Dialect::MySql
    }

    fn pool_dialect(_pool: &Pool<Self>) -> Dialect {
        Dialect::MySql
    }

    fn last_insert_id(result: &MySqlQueryResult) -> Option<u64> {
        Some(result.last_insert_id())
    }
}

impl sealed::Protocol for MySql {
    async fn migrate(pool: &Pool<Self>) -> Result<(), MigrateError> {
        Dialect::MySql.migrator().run(pool).await
    }

    fn migration_versions(_pool: &Pool<Self>) -> Vec<i64> {
        Dialect::MySql.migration_versions()
    }

    async fn connect(url: &str, config: &StoreConfig) -> Result<Pool<Self>, sqlx::Error> {
        let options = MySqlConnectOptions::from_str(url)?.timezone(Some("+00:00".to_owned()));
        MySqlPoolOptions::new()
            .acquire_timeout(config.acquire_timeout())
            .connect_with(options)
            .await
    }

    async fn begin_write<'c>(
        conn: &'c mut Self::Connection,
        _statements: Statements,
        lock_timeout: Duration,
        _tenant: &TenantId,
    ) -> Result<Transaction<'c, Self>, sqlx::Error> {
        conn.begin_with(mysql_begin(lock_timeout)).await
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
            .downcast_ref::<MySqlDatabaseError>()
            .map(|error| error as &dyn DatabaseError)
    }

    fn is_transient(error: &dyn DatabaseError) -> bool {
        // ER_LOCK_DEADLOCK (the server rolled the transaction back), and MariaDB's
        // ER_CHECKREAD ("record has changed since last read").
        matches!(error_number(error), Some(1213 | 1020))
    }

    fn is_lock_timeout(error: &dyn DatabaseError) -> bool {
        // ER_LOCK_WAIT_TIMEOUT
        error_number(error) == Some(1205)
    }
}

//! `Any`: PostgreSQL, SQLite, or (with the feature `mysql`) MySQL and MariaDB, picked from the
//! URL at run time; each statement goes out in the dialect of the connection at hand.

use std::error::Error as StdError;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::error::DatabaseError;
use sqlx::migrate::MigrateError;
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;
use sqlx::{Any, AssertSqlSafe, Connection as _, Pool, Postgres, Sqlite, Transaction};
use uuid::Uuid;

#[cfg(feature = "mysql")]
use super::mysql::mysql_begin;
use super::postgres::{postgres_begin, postgres_begin_for};
use super::sql::*;
use super::sqlite::SQLITE_BEGIN;
use super::*;
use crate::audit::sql::*;

impl SqlDialect for Any {
    fn dialect(conn: &Self::Connection) -> Dialect {
        Dialect::of_connection(conn)
    }

    fn pool_dialect(pool: &Pool<Self>) -> Dialect {
        Dialect::of_pool(pool)
    }

    #[cfg(feature = "mysql")]
    fn last_insert_id(result: &sqlx::any::AnyQueryResult) -> Option<u64> {
        // The driver hands MySQL's unsigned id over as an `i64`, bit for bit.
        result.last_insert_id().map(i64::cast_unsigned)
    }
}

impl sealed::Protocol for Any {
    async fn migrate(pool: &Pool<Self>) -> Result<(), MigrateError> {
        Dialect::of_pool(pool).migrator().run(pool).await
    }

    fn migration_versions(pool: &Pool<Self>) -> Vec<i64> {
        Dialect::of_pool(pool).migration_versions()
    }

    async fn connect(url: &str, config: &StoreConfig) -> Result<Pool<Self>, sqlx::Error> {
        sqlx::any::install_default_drivers();
        #[cfg(not(feature = "mysql"))]
        if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            return Err(sqlx::Error::Configuration(
                "idem runs MySQL and MariaDB with the feature `mysql`: enable it next to `any`"
                    .into(),
            ));
        }
        let dialect = Dialect::of_url(url);
        if dialect == Dialect::Postgres {
            // libpq's rules, as the PostgreSQL backend reads them (`postgres_url`).
            super::postgres_url::checked_options(url, |name| std::env::var(name).ok())?;
        }
        if dialect != Dialect::Sqlite {
            // Any's connections neither show nor clear their statement cache: behind a
            // transaction pooler (PostgreSQL's) they keep none (see `postgres::connect`).
            // sqlx's MySQL connections set `time_zone = '+00:00'`, the clock idem reads there.
            let url = if dialect == Dialect::Postgres && config.transaction_pooling() {
                with_parameter(url, "statement-cache-capacity=0")
            } else {
                url.to_owned()
            };
            return AnyPoolOptions::new()
                .acquire_timeout(config.acquire_timeout())
                .connect(&url)
                .await;
        }
        // What `SqliteConnectOptions` sets for the SQLite backend, said in SQL.
        let synchronous = match config.sqlite_synchronous() {
            crate::SqliteSynchronous::Full => "FULL",
            crate::SqliteSynchronous::Normal => "NORMAL",
        };
        let pragmas = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {}",
            config.lock_timeout().as_millis()
        );
        let url = if url.contains("mode=") {
            url.to_owned()
        } else {
            with_parameter(url, "mode=rwc")
        };
        AnyPoolOptions::new()
            .acquire_timeout(config.acquire_timeout())
            .after_connect(move |connection, _| {
                let pragmas = AssertSqlSafe(pragmas.clone());
                Box::pin(async move { sqlx::raw_sql(pragmas).execute(connection).await.map(drop) })
            })
            .connect(&url)
            .await
    }

    async fn begin_write<'c>(
        conn: &'c mut Self::Connection,
        statements: Statements,
        lock_timeout: Duration,
        tenant: &TenantId,
    ) -> Result<Transaction<'c, Self>, sqlx::Error> {
        match Dialect::of_connection(conn) {
            Dialect::Sqlite => conn.begin_with(SQLITE_BEGIN).await,
            Dialect::Postgres => {
                conn.begin_with(postgres_begin(lock_timeout, tenant, statements))
                    .await
            }
            #[cfg(feature = "mysql")]
            Dialect::MySql => conn.begin_with(mysql_begin(lock_timeout)).await,
        }
    }

    async fn begin_for(
        pool: &Pool<Self>,
        statements: Statements,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Self>, sqlx::Error> {
        match Dialect::of_pool(pool) {
            Dialect::Postgres => {
                pool.begin_with(postgres_begin_for(tenant, statements))
                    .await
            }
            _ => pool.begin().await,
        }
    }

    shared_statements!();

    fn driver_error<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e dyn DatabaseError> {
        let driver_error = Postgres::driver_error(error).or_else(|| Sqlite::driver_error(error));
        #[cfg(feature = "mysql")]
        let driver_error = driver_error.or_else(|| sqlx::MySql::driver_error(error));
        driver_error
    }

    fn is_transient(error: &dyn DatabaseError) -> bool {
        match driver_of(error) {
            Some(Dialect::Postgres) => Postgres::is_transient(error),
            Some(Dialect::Sqlite) => Sqlite::is_transient(error),
            #[cfg(feature = "mysql")]
            Some(Dialect::MySql) => sqlx::MySql::is_transient(error),
            None => false,
        }
    }

    fn is_lock_timeout(error: &dyn DatabaseError) -> bool {
        match driver_of(error) {
            Some(Dialect::Postgres) => Postgres::is_lock_timeout(error),
            Some(Dialect::Sqlite) => Sqlite::is_lock_timeout(error),
            #[cfg(feature = "mysql")]
            Some(Dialect::MySql) => sqlx::MySql::is_lock_timeout(error),
            None => false,
        }
    }
}

/// Which driver raised a database error: their codes overlap (MySQL reports SQLSTATEs too), so
/// each is read by its own driver's rules, and an error of none of them is not retried.
fn driver_of(error: &dyn DatabaseError) -> Option<Dialect> {
    if error.try_downcast_ref::<PgDatabaseError>().is_some() {
        return Some(Dialect::Postgres);
    }
    if error.try_downcast_ref::<SqliteError>().is_some() {
        return Some(Dialect::Sqlite);
    }
    #[cfg(feature = "mysql")]
    if error
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .is_some()
    {
        return Some(Dialect::MySql);
    }
    None
}

/// `url` with one more query parameter.
fn with_parameter(url: &str, parameter: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{parameter}")
}

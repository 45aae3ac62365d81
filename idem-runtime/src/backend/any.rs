//! `Any`: PostgreSQL or SQLite, picked from the URL at run time; each statement goes out in
//! the dialect of the connection at hand.

use std::error::Error as StdError;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::error::DatabaseError;
use sqlx::migrate::MigrateError;
use sqlx::{Any, AssertSqlSafe, Connection as _, Pool, Postgres, Sqlite, Transaction};
use uuid::Uuid;

use super::postgres::{postgres_begin, postgres_begin_for};
use super::sql::*;
use super::sqlite::SQLITE_BEGIN;
use super::*;
use crate::audit::sql::*;

impl SharedSql for Any {
    fn dialect(conn: &Self::Connection) -> Dialect {
        Dialect::of_connection(conn)
    }

    fn pool_dialect(pool: &Pool<Self>) -> Dialect {
        Dialect::of_pool(pool)
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
        if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            return Err(sqlx::Error::Configuration(
                "idem's Any backend runs PostgreSQL or SQLite: for MySQL and MariaDB, use IdempotencyStore<MySql> (feature `mysql`)".into(),
            ));
        }
        if Dialect::of_url(url) == Dialect::Postgres {
            // Any's connections neither show nor clear their statement cache: behind a
            // transaction pooler they keep none (see `postgres::connect`).
            let url = if config.transaction_pooling() {
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
        }
    }

    async fn begin_for(
        pool: &Pool<Self>,
        statements: Statements,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Self>, sqlx::Error> {
        match Dialect::of_pool(pool) {
            Dialect::Sqlite => pool.begin().await,
            Dialect::Postgres => {
                pool.begin_with(postgres_begin_for(tenant, statements))
                    .await
            }
        }
    }

    shared_statements!();

    async fn record_write(
        tx: &mut Transaction<'_, Self>,
        statements: Statements,
        scope: &KeyScope<'_>,
        response: &StoredResponse,
        audit: &AuditRecord,
    ) -> Result<(), sqlx::Error> {
        match Dialect::of_connection(tx) {
            Dialect::Sqlite => record_write_apart!(tx, statements, scope, response, audit),
            Dialect::Postgres => record_write_together!(tx, statements, scope, response, audit),
        }
    }

    fn driver_error<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e dyn DatabaseError> {
        Postgres::driver_error(error).or_else(|| Sqlite::driver_error(error))
    }

    fn is_transient(error: &dyn DatabaseError) -> bool {
        // The two code sets do not overlap: SQLSTATEs are five characters, SQLite's are numbers.
        Postgres::is_transient(error) || Sqlite::is_transient(error)
    }

    fn is_lock_timeout(error: &dyn DatabaseError) -> bool {
        Postgres::is_lock_timeout(error)
    }
}

/// `url` with one more query parameter.
fn with_parameter(url: &str, parameter: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{parameter}")
}

#[cfg(test)]
mod tests {
    use crate::{IdempotencyStore, StoreConfig, StoreError};

    /// `Any` would send PostgreSQL's SQL to MySQL: it refuses a MySQL URL before connecting,
    /// and names the backend to use.
    #[tokio::test]
    async fn a_mysql_url_is_refused_with_the_backend_to_use() {
        let refused = IdempotencyStore::<sqlx::Any>::connect(
            "mysql://root@localhost/books",
            StoreConfig::default(),
        )
        .await;
        let Err(StoreError::Database(sqlx::Error::Configuration(reason))) = refused else {
            panic!("refused as a configuration error: {refused:?}");
        };
        assert!(
            reason.to_string().contains("IdempotencyStore<MySql>"),
            "{reason}"
        );
    }
}

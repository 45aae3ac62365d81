//! Which database a pool or a connection reaches, and idem's migrations for it.

use sqlx::migrate::Migrator;

use super::MIGRATIONS_TABLE;

/// Which database a pool reaches: fixed for [`Postgres`](sqlx::Postgres),
/// [`Sqlite`](sqlx::Sqlite) and [`MySql`](sqlx::MySql), read from the URL or the connection for
/// [`Any`](sqlx::Any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    #[cfg(feature = "postgres")]
    Postgres,
    #[cfg(feature = "sqlite")]
    Sqlite,
    /// MySQL and MariaDB.
    #[cfg(feature = "mysql")]
    MySql,
}

impl Dialect {
    /// The dialect of a URL's scheme: `sqlite:`, `mysql:` or `mariadb:`, else PostgreSQL.
    #[cfg(feature = "any")]
    pub(crate) fn of_url(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            return Self::Sqlite;
        }
        #[cfg(feature = "mysql")]
        if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            return Self::MySql;
        }
        Self::Postgres
    }

    #[cfg(feature = "any")]
    pub(crate) fn of_pool(pool: &sqlx::Pool<sqlx::Any>) -> Self {
        Self::of_url(pool.connect_options().database_url.as_str())
    }

    #[cfg(feature = "any")]
    pub(crate) fn of_connection(conn: &<sqlx::Any as sqlx::Database>::Connection) -> Self {
        let backend = conn.backend_name();
        if backend == <sqlx::Sqlite as sqlx::Database>::NAME {
            return Self::Sqlite;
        }
        #[cfg(feature = "mysql")]
        if backend == <sqlx::MySql as sqlx::Database>::NAME {
            return Self::MySql;
        }
        Self::Postgres
    }

    /// idem's migrations for this database (embedded once per dialect), tracked in their own
    /// table ([`MIGRATIONS_TABLE`]) so they never mix with the application's.
    pub(crate) fn migrator(self) -> Migrator {
        let mut migrator = match self {
            #[cfg(feature = "postgres")]
            Self::Postgres => sqlx::migrate!("./migrations/postgres"),
            #[cfg(feature = "sqlite")]
            Self::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            #[cfg(feature = "mysql")]
            Self::MySql => sqlx::migrate!("./migrations/mysql"),
        };
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator
    }

    pub(crate) fn migration_versions(self) -> Vec<i64> {
        self.migrator()
            .iter()
            .map(|migration| migration.version)
            .collect()
    }
}

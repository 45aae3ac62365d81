//! Which database a pool or a connection reaches, and idem's migrations for it.

use sqlx::migrate::Migrator;

use super::MIGRATIONS_TABLE;

/// Which database a pool reaches: fixed for [`Postgres`] and [`Sqlite`], read from the URL or
/// the connection for [`Any`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    #[cfg(feature = "any")]
    pub(crate) fn of_url(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }

    #[cfg(feature = "any")]
    pub(crate) fn of_pool(pool: &sqlx::Pool<sqlx::Any>) -> Self {
        Self::of_url(pool.connect_options().database_url.as_str())
    }

    #[cfg(feature = "any")]
    pub(crate) fn of_connection(conn: &<sqlx::Any as sqlx::Database>::Connection) -> Self {
        if conn.backend_name() == <sqlx::Sqlite as sqlx::Database>::NAME {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }

    /// idem's migrations for this database (embedded once per dialect), tracked in their own
    /// table ([`MIGRATIONS_TABLE`]) so they never mix with the application's.
    pub(crate) fn migrator(self) -> Migrator {
        let mut migrator = match self {
            Self::Postgres => sqlx::migrate!("./migrations/postgres"),
            Self::Sqlite => sqlx::migrate!("./migrations/sqlite"),
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

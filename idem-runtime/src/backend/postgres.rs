//! PostgreSQL: a write transaction bounds its lock waits with `lock_timeout`; serialization
//! failures and deadlocks are retried; the response and the audit row are one statement.

use std::error::Error as StdError;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgDatabaseError, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, Pool, Postgres, Transaction};
use uuid::Uuid;

use super::postgres_url::checked_options;
use super::sql::*;
use super::*;
use crate::audit::sql::*;

/// One round trip: the lock timeout bounds the wait on a twin's claim (and any other lock wait
/// of the transaction), and the tenant is the transaction's `idem.tenant_id`, for row-level
/// security policies (see [`tenant_setting`]); both vanish with the transaction.
pub(super) fn postgres_begin(
    lock_timeout: Duration,
    tenant: &TenantId,
    statements: Statements,
) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!(
        "{}SET LOCAL lock_timeout = {}; {}",
        begin(statements),
        lock_timeout.as_millis().max(1),
        tenant_setting(tenant)
    ))
}

/// `BEGIN` with only the tenant set: a transaction for the tenant's reads.
pub(super) fn postgres_begin_for(
    tenant: &TenantId,
    statements: Statements,
) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!("{}{}", begin(statements), tenant_setting(tenant)))
}

/// `BEGIN`, and behind a transaction pooler `DEALLOCATE ALL` in the same round trip: the server
/// connection the pooler lent may hold named statements that a write abandoned mid-body (its
/// request gone) prepared and never closed, and a statement of this transaction prepared under
/// the same name would fail. Nobody else uses that server until the transaction ends.
fn begin(statements: Statements) -> &'static str {
    match statements {
        Statements::Prepared => "BEGIN; ",
        Statements::Unnamed => "BEGIN; DEALLOCATE ALL; ",
    }
}

/// `SET LOCAL idem.tenant_id = E'…'`. The value goes into the simple query that begins the
/// transaction (no extra round trip), so it is quoted here: an escape string with `\` doubled
/// and `'` doubled is the same text whatever `standard_conforming_strings` says, and whatever
/// `backslash_quote` says (which may refuse `\'`), and a tenant id is visible ASCII only (no
/// byte can end the literal otherwise).
fn tenant_setting(tenant: &TenantId) -> String {
    let escaped = tenant.as_str().replace('\\', "\\\\").replace('\'', "''");
    format!("SET LOCAL idem.tenant_id = E'{escaped}'")
}

impl SqlDialect for Postgres {
    fn dialect(_conn: &Self::Connection) -> Dialect {
        Dialect::Postgres
    }

    fn pool_dialect(_pool: &Pool<Self>) -> Dialect {
        Dialect::Postgres
    }
}

impl sealed::Protocol for Postgres {
    async fn migrate(pool: &Pool<Self>) -> Result<(), MigrateError> {
        Dialect::Postgres.migrator().run(pool).await
    }

    fn migration_versions(_pool: &Pool<Self>) -> Vec<i64> {
        Dialect::Postgres.migration_versions()
    }

    async fn connect(url: &str, config: &StoreConfig) -> Result<Pool<Self>, sqlx::Error> {
        let mut options = checked_options(url, |name| std::env::var(name).ok())?;
        if config.transaction_pooling() {
            options = options.statement_cache_capacity(0);
        }
        PgPoolOptions::new()
            .acquire_timeout(config.acquire_timeout())
            .connect_with(options)
            .await
    }

    async fn begin_write<'c>(
        conn: &'c mut Self::Connection,
        statements: Statements,
        lock_timeout: Duration,
        tenant: &TenantId,
    ) -> Result<Transaction<'c, Self>, sqlx::Error> {
        conn.begin_with(postgres_begin(lock_timeout, tenant, statements))
            .await
    }

    async fn begin_for(
        pool: &Pool<Self>,
        statements: Statements,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Self>, sqlx::Error> {
        pool.begin_with(postgres_begin_for(tenant, statements))
            .await
    }

    shared_statements!();

    fn driver_error<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e dyn DatabaseError> {
        error
            .downcast_ref::<PgDatabaseError>()
            .map(|error| error as &dyn DatabaseError)
    }

    fn is_transient(error: &dyn DatabaseError) -> bool {
        // serialization_failure, deadlock_detected
        matches!(error.code().as_deref(), Some("40001" | "40P01"))
    }

    fn is_lock_timeout(error: &dyn DatabaseError) -> bool {
        // lock_not_available
        error.code().as_deref() == Some("55P03")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sections of `examples/sql-cost/statements.sql` that mirror the protocol: each
    /// names the statement it mirrors, and its SQL text, before pgbench's values replace the
    /// `$n` placeholders, must be the protocol's own, so the cost analysis cannot drift from
    /// the code.
    #[test]
    fn the_sql_cost_statements_are_the_protocols() {
        let statements = include_str!("../../../examples/sql-cost/statements.sql");
        let tenant = TenantId::new("sql-cost").unwrap();
        let begin = postgres_begin(Duration::from_millis(5000), &tenant, Statements::Prepared).0;
        let mirrored = [
            ("fast-path", sql::FIND_RECORD.postgres),
            ("begin", begin.as_str()),
            ("claim", sql::CLAIM.postgres),
            ("record", crate::audit::sql::RECORD_WRITE_TOGETHER),
        ];
        for (name, protocol) in mirrored {
            let section = section(statements, name)
                .unwrap_or_else(|| panic!("statements.sql has no section `{name}`"));
            assert_eq!(
                normalized(&section),
                normalized(protocol),
                "statements.sql's `{name}` is not the protocol's statement: copy it from the code"
            );
        }
    }

    /// The SQL lines of one `-- @ name` section, without its comments.
    fn section(statements: &str, name: &str) -> Option<String> {
        let mut lines = statements.lines();
        lines.find(|line| {
            line.strip_prefix("-- @ ")
                .is_some_and(|rest| rest.split([':', ' ']).next() == Some(name))
        })?;
        Some(
            lines
                .take_while(|line| !line.starts_with("-- @ "))
                .filter(|line| !line.starts_with("--"))
                .collect::<Vec<_>>()
                .join(" "),
        )
    }

    /// Whitespace collapsed, spaces inside parentheses and before `;` dropped, the final `;`
    /// dropped.
    fn normalized(sql: &str) -> String {
        let collapsed = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        collapsed
            .replace("( ", "(")
            .replace(" )", ")")
            .replace(" ;", ";")
            .trim_end_matches(';')
            .to_owned()
    }

    #[test]
    fn the_tenant_setting_quotes_every_visible_character() {
        let tenant = TenantId::new(r"it's\a';DROP--").unwrap();
        assert_eq!(
            tenant_setting(&tenant),
            r"SET LOCAL idem.tenant_id = E'it''s\\a'';DROP--'"
        );
    }
}

//! The audit log's SQL: its column list, the binding of a record, a batch insert, the new
//! write's row with its stored response, and the retention purge.

use std::fmt::Write as _;

use sqlx::AssertSqlSafe;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
use crate::backend::{DialectSql, dialect_sql};

/// `INSERT INTO` the audit log with its column list, in the order [`bind_audit!`] binds.
macro_rules! insert_audit {
    () => {
        "INSERT INTO idempotent_write_audit_log
    (id, operation, class, company_id, user_id, key_hash, entity_id, fingerprint, outcome, status,
     failure, attempts, duration_ms, request_id, created_at_ms) "
    };
}

/// [`STORE_RESPONSE`] and [`APPEND_AUDIT`] in one statement, for PostgreSQL.
#[cfg(feature = "postgres")]
pub(crate) const RECORD_WRITE_TOGETHER: &str = concat!(
    "WITH stored AS (
    UPDATE idempotency_keys
    SET response_status = $4, response_headers = $5, response_body = $6
    WHERE tenant_id = $1 AND operation = $2 AND idempotency_key = $3
    RETURNING 1
)
",
    insert_audit!(),
    "SELECT $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21 FROM stored"
);

#[cfg(feature = "sqlite")]
pub(crate) const APPEND_AUDIT: &str = concat!(
    insert_audit!(),
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
);

/// The columns of [`insert_audit!`], which [`bind_audit!`] binds.
pub(crate) const AUDIT_COLUMNS: usize = 15;

/// How a statement writes its parameters.
#[derive(Clone, Copy)]
pub(crate) enum Placeholders {
    /// `$1`, `$2`, …: PostgreSQL, SQLite, and `Any` on either (a `QueryBuilder<Any>` would
    /// write `?`, which PostgreSQL refuses).
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    Numbered,
    /// `?`, bound in order: MySQL.
    #[cfg(feature = "mysql")]
    Positional,
}

/// The audit insert for `rows` rows.
pub(crate) fn append_audit_rows(rows: usize, placeholders: Placeholders) -> AssertSqlSafe<String> {
    let mut sql = String::from(insert_audit!());
    sql.push_str("VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..AUDIT_COLUMNS {
            let separator = if column == 0 { "" } else { ", " };
            let _ = match placeholders {
                #[cfg(any(feature = "postgres", feature = "sqlite"))]
                Placeholders::Numbered => {
                    write!(sql, "{separator}${}", row * AUDIT_COLUMNS + column + 1)
                }
                #[cfg(feature = "mysql")]
                Placeholders::Positional => write!(sql, "{separator}?"),
            };
        }
        sql.push(')');
    }
    AssertSqlSafe(sql)
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) const PURGE_AUDIT_AS_OWNER: &str = "SELECT idempotent_write_audit_purge($1, $2)";

/// SQLite: the maintenance transaction opens its horizon (the triggers let rows older than it
/// go), deletes one batch, and closes it.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) const OPEN_AUDIT_MAINTENANCE: DialectSql = dialect_sql!(
    "INSERT INTO idempotent_write_audit_maintenance (horizon_ms) VALUES (" NOW " - $1)"
);
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) const PURGE_AUDIT_BATCH: &str = "\
DELETE FROM idempotent_write_audit_log WHERE id IN (
    SELECT id FROM idempotent_write_audit_log
    WHERE created_at_ms < (SELECT MAX(horizon_ms) FROM idempotent_write_audit_maintenance)
    ORDER BY created_at_ms
    LIMIT $1
)";
pub(crate) const CLOSE_AUDIT_MAINTENANCE: &str = "DELETE FROM idempotent_write_audit_maintenance";

/// Binds an audit row's fields ([`AUDIT_COLUMNS`] of them) in the column order of
/// [`insert_audit!`], after whatever `$query` has bound already.
macro_rules! bind_audit {
    ($query:expr, $record:expr) => {{
        let record = $record;
        $query
            .bind(record.id.to_string())
            .bind(record.operation.name())
            .bind(record.operation.class().as_str())
            .bind(record.tenant.as_str())
            .bind(record.user.as_deref())
            .bind(record.key_hash.as_str())
            .bind(record.entity_id.to_string())
            .bind(record.fingerprint.to_string())
            .bind(record.outcome.as_str())
            .bind(record.status.map(i32::from))
            .bind(record.outcome.failure())
            .bind(i32::try_from(record.attempts).unwrap_or(i32::MAX))
            .bind(record.duration_ms)
            .bind(record.request_id.as_deref())
            .bind(record.now_ms)
    }};
}

/// The response and the audit row of a new write as two statements (SQLite, where a statement
/// costs no round trip).
#[cfg(feature = "sqlite")]
macro_rules! record_write_apart {
    ($tx:expr, $statements:expr, $scope:expr, $response:expr, $audit:expr) => {{
        let (tx, persistent, scope, response, audit) =
            ($tx, $statements.persistent(), $scope, $response, $audit);
        let store = sqlx::query(STORE_RESPONSE).persistent(persistent);
        bind_response!(store, scope, response)?
            .execute(&mut **tx)
            .await?;
        bind_audit!(sqlx::query(APPEND_AUDIT).persistent(persistent), audit)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }};
}

/// The response and the audit row of a new write as one statement (PostgreSQL): a round trip
/// saved on every new write.
#[cfg(feature = "postgres")]
macro_rules! record_write_together {
    ($tx:expr, $statements:expr, $scope:expr, $response:expr, $audit:expr) => {{
        let (tx, persistent, scope, response, audit) =
            ($tx, $statements.persistent(), $scope, $response, $audit);
        let query = sqlx::query(RECORD_WRITE_TOGETHER).persistent(persistent);
        let query = bind_response!(query, scope, response)?;
        bind_audit!(query, audit).execute(&mut **tx).await?;
        Ok(())
    }};
}

pub(crate) use bind_audit;
#[cfg(feature = "sqlite")]
pub(crate) use record_write_apart;
#[cfg(feature = "postgres")]
pub(crate) use record_write_together;

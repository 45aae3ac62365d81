//! The audit log's SQL: its column list, the binding of a record, a batch insert, the new
//! write's row with its stored response, and the retention purge.

use std::fmt::Write as _;

use sqlx::AssertSqlSafe;

use crate::backend::{Dialect, DialectSql, dialect_sql};

/// `INSERT INTO` the audit log with its column list, in the order [`bind_audit!`] binds: the
/// last two, the times, are the database's clock less the age of what happened.
macro_rules! insert_audit {
    () => {
        "INSERT INTO idempotent_write_audit_log
    (id, operation, class, company_id, user_id, key_hash, entity_id, fingerprint, outcome, status,
     failure, attempts, duration_ms, request_id, repeat_count, created_at_ms, first_seen_at_ms) "
    };
}

/// [`insert_audit!`] with one row of `$n` parameters, in `$dialect`'s clock.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
macro_rules! append_audit_numbered {
    ($dialect:ident) => {
        concat!(
            insert_audit!(),
            $crate::backend::sql_with_now!($dialect;
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
                NOW " - $16, " NOW " - $17)")
        )
    };
}

/// [`STORE_RESPONSE`](crate::backend::sql) and [`APPEND_AUDIT`] in one statement, for
/// PostgreSQL: the response and the key's scope first, as `bind_response!` binds them.
#[cfg(feature = "postgres")]
pub(crate) const RECORD_WRITE_TOGETHER: &str = concat!(
    "WITH stored AS (
    UPDATE idempotency_keys
    SET response_status = $1, response_headers = $2, response_body = $3
    WHERE tenant_id = $4 AND operation = $5 AND idempotency_key = $6
    RETURNING 1
)
",
    insert_audit!(),
    crate::backend::sql_with_now!(postgres;
        "SELECT $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, "
        NOW " - $22, " NOW " - $23 FROM stored")
);

/// One audit row.
pub(crate) const APPEND_AUDIT: DialectSql = DialectSql {
    #[cfg(feature = "postgres")]
    postgres: append_audit_numbered!(postgres),
    #[cfg(feature = "sqlite")]
    sqlite: append_audit_numbered!(sqlite),
    #[cfg(feature = "mysql")]
    mysql: concat!(
        insert_audit!(),
        crate::backend::sql_with_now!(mysql;
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, " NOW " - ?, " NOW " - ?)")
    ),
};

/// The columns of [`insert_audit!`], which [`bind_audit!`] binds.
pub(crate) const AUDIT_COLUMNS: usize = 17;

/// The last columns of [`insert_audit!`], the times: each the database's clock less an age.
const AUDIT_TIMES: usize = 2;

/// The audit insert for `rows` rows, with the dialect's parameters: `$1`, `$2`, … on
/// PostgreSQL and SQLite (a `QueryBuilder<Any>` would write `?`, which PostgreSQL refuses), `?`
/// on MySQL.
pub(crate) fn append_audit_rows(rows: usize, dialect: Dialect) -> AssertSqlSafe<String> {
    let now = DATABASE_NOW.get(dialect);
    let mut sql = String::from(insert_audit!());
    sql.push_str("VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..AUDIT_COLUMNS {
            let separator = if column == 0 { "" } else { ", " };
            let (clock, minus) = if column >= AUDIT_COLUMNS - AUDIT_TIMES {
                (now, " - ")
            } else {
                ("", "")
            };
            let _ = match dialect {
                #[cfg(feature = "mysql")]
                Dialect::MySql => write!(sql, "{separator}{clock}{minus}?"),
                #[allow(unreachable_patterns, reason = "MySQL's is the only other dialect")]
                _ => write!(
                    sql,
                    "{separator}{clock}{minus}${}",
                    row * AUDIT_COLUMNS + column + 1
                ),
            };
        }
        sql.push(')');
    }
    AssertSqlSafe(sql)
}

/// The database's clock in Unix milliseconds.
const DATABASE_NOW: DialectSql = dialect_sql!([NOW]);

#[cfg(feature = "postgres")]
pub(crate) const PURGE_AUDIT_AS_OWNER: &str = "SELECT idempotent_write_audit_purge($1, $2)";

/// SQLite and MySQL: the maintenance transaction opens its horizon (the triggers let rows older
/// than it go), deletes one batch, and closes it.
pub(crate) const OPEN_AUDIT_MAINTENANCE: DialectSql = dialect_sql!(
    ["INSERT INTO idempotent_write_audit_maintenance (horizon_ms) VALUES (" NOW " - " P1 ")"]
);
pub(crate) const PURGE_AUDIT_BATCH: DialectSql = dialect_sql!(
    ["DELETE FROM idempotent_write_audit_log WHERE id IN (
    SELECT id FROM idempotent_write_audit_log
    WHERE created_at_ms < (SELECT MAX(horizon_ms) FROM idempotent_write_audit_maintenance)
    ORDER BY created_at_ms
    LIMIT $1
)"],
    mysql: ["DELETE FROM idempotent_write_audit_log
WHERE created_at_ms < (SELECT MAX(horizon_ms) FROM idempotent_write_audit_maintenance)
ORDER BY created_at_ms
LIMIT ?"]
);
pub(crate) const CLOSE_AUDIT_MAINTENANCE: &str = "DELETE FROM idempotent_write_audit_maintenance";

/// The audit rows after seq `P2` through seq `P3`, in the order they were inserted, at most
/// `P4` of them: the columns a seal covers ([`SealedRow`](super::seal::SealedRow)), integers
/// as 64-bit, and last whether the row was inserted at least `P1` ms ago by the database's
/// clock. (The parameters are numbered in the order they appear: MySQL's `?` bind by place.)
pub(crate) const AUDIT_ROWS_TO_SEAL: DialectSql = dialect_sql!(
    ["SELECT seq, id, operation, class, company_id, user_id, key_hash, entity_id, fingerprint,
    outcome, CAST(status AS " INT64 "), failure, CAST(attempts AS " INT64 "), duration_ms,
    request_id, CAST(repeat_count AS " INT64 "), created_at_ms, first_seen_at_ms, inserted_at_ms,
    CAST(CASE WHEN inserted_at_ms <= " NOW " - " P1 " THEN 1 ELSE 0 END AS " INT64 ")
FROM idempotent_write_audit_log
WHERE seq > " P2 " AND seq <= " P3 "
ORDER BY seq
LIMIT " P4]
);

/// The seals, in order; [`LATEST_AUDIT_SEAL`] only the last.
pub(crate) const AUDIT_SEALS: &str =
    "SELECT seal, first_seq, last_seq, row_count, digest, previous_digest, sealed_at_ms
FROM idempotent_write_audit_seals
ORDER BY seal";
pub(crate) const LATEST_AUDIT_SEAL: &str =
    "SELECT seal, first_seq, last_seq, row_count, digest, previous_digest, sealed_at_ms
FROM idempotent_write_audit_seals
WHERE seal = (SELECT MAX(seal) FROM idempotent_write_audit_seals)";

/// A new seal: number, first and last seq, rows, digest, previous digest; sealed now.
pub(crate) const RECORD_AUDIT_SEAL: DialectSql = dialect_sql!(
    ["INSERT INTO idempotent_write_audit_seals
    (seal, first_seq, last_seq, row_count, digest, previous_digest, sealed_at_ms)
VALUES (" P1 ", " P2 ", " P3 ", " P4 ", " P5 ", " P6 ", " NOW ")"]
);

/// The oldest audit row still in the log: the seals before it were emptied by retention.
pub(crate) const OLDEST_AUDIT_SEQ: &str = "SELECT MIN(seq) FROM idempotent_write_audit_log";

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
            .bind(i32::try_from(record.repeats).unwrap_or(i32::MAX))
            .bind($crate::clock::millis(record.at.elapsed()))
            .bind($crate::clock::millis(record.first_at.elapsed()))
    }};
}

pub(crate) use bind_audit;

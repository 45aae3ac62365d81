//! Every statement the protocol sends, by name, and their plans: what the plan tests check
//! (`protocol::postgres_only::no_protocol_statement_scans_a_whole_table` and its SQLite twin),
//! so that a statement that would read a whole table as it grows fails a test instead of a
//! service a year later.

use super::Dialect;
use super::sql::*;
use crate::audit::sql::*;

/// The statements on the write path, the outbox's and retention's, each by name, in
/// `dialect`'s words; a new statement belongs here. Left out: `_idem_migrations` and the seals
/// listing of a verification, which read their whole (small) tables by design, the constant
/// clock, and PostgreSQL's audit purge, a function of the owner's whose statement
/// `postgres_generic_plans` reads from the database itself.
fn statements(dialect: Dialect) -> Vec<(&'static str, &'static str)> {
    vec![
        ("find_record", FIND_RECORD.get(dialect)),
        ("claim", CLAIM.get(dialect)),
        ("store_response", STORE_RESPONSE.get(dialect)),
        ("append_audit", APPEND_AUDIT.get(dialect)),
        ("record_event", RECORD_EVENT.get(dialect)),
        ("claim_events", CLAIM_EVENTS.get(dialect)),
        ("defer_event", DEFER_EVENT.get(dialect)),
        (
            "record_delivery_failure",
            RECORD_DELIVERY_FAILURE.get(dialect),
        ),
        ("parked_at", PARKED_AT.get(dialect)),
        ("parked_events", PARKED_EVENTS.get(dialect)),
        ("requeue_parked", REQUEUE_PARKED.get(dialect)),
        ("outbox_backlog", OUTBOX_BACKLOG.get(dialect)),
        ("mark_delivered", MARK_DELIVERED.get(dialect)),
        ("purge_delivered", PURGE_DELIVERED.get(dialect)),
        ("purge_expired", PURGE_EXPIRED.get(dialect)),
        ("audit_rows_to_seal", AUDIT_ROWS_TO_SEAL.get(dialect)),
        ("latest_audit_seal", LATEST_AUDIT_SEAL),
        ("record_audit_seal", RECORD_AUDIT_SEAL.get(dialect)),
        ("oldest_audit_seq", OLDEST_AUDIT_SEQ),
    ]
}

/// The protocol's statements on PostgreSQL, with the new write's response and audit row in one.
#[cfg(feature = "postgres")]
pub fn postgres_statements() -> Vec<(&'static str, &'static str)> {
    let mut statements = statements(Dialect::Postgres);
    statements.push(("record_write_together", RECORD_WRITE_TOGETHER));
    statements
}

/// The protocol's statements on SQLite, with the audit purge's batch.
#[cfg(feature = "sqlite")]
pub fn sqlite_statements() -> Vec<(&'static str, &'static str)> {
    let mut statements = statements(Dialect::Sqlite);
    statements.push(("purge_audit_batch", PURGE_AUDIT_BATCH.get(Dialect::Sqlite)));
    statements
}

/// The generic plan (the one a prepared statement runs with any parameters) of each of the
/// protocol's statements on PostgreSQL, by name, as `EXPLAIN` prints it. Besides
/// [`postgres_statements`], it plans the owner's audit purge function's `DELETE` as the database
/// holds it, its variables as parameters. What the plan test and the benchmark's scale mode
/// read on loaded tables; it sets `plan_cache_mode = force_generic_plan` on `conn`.
#[cfg(feature = "postgres")]
pub async fn postgres_generic_plans(
    conn: &mut sqlx::PgConnection,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await?;
    let source: String = sqlx::query_scalar(
        "SELECT prosrc FROM pg_proc
         WHERE proname = 'idempotent_write_audit_purge' AND pronamespace = current_schema()::regnamespace",
    )
    .fetch_one(&mut *conn)
    .await?;
    let purge = source
        .find("DELETE FROM idempotent_write_audit_log")
        .and_then(|start| Some(&source[start..start + source[start..].find(';')?]))
        .ok_or_else(|| sqlx::Error::Protocol("the audit purge function has no DELETE".into()))?
        .replace("horizon", "$1")
        .replace("max_rows", "$2");
    let mut statements: Vec<(&str, &str)> = postgres_statements();
    statements.push(("the audit purge function's delete", &purge));

    let mut plans = Vec::new();
    for (name, statement) in statements {
        let parameters = (1..=40)
            .rev()
            .find(|n| statement.contains(&format!("${n}")))
            .unwrap_or(0);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PREPARE idem_plan_check AS {statement}"
        )))
        .execute(&mut *conn)
        .await?;
        let explain = match parameters {
            0 => "EXPLAIN EXECUTE idem_plan_check".to_owned(),
            n => format!(
                "EXPLAIN EXECUTE idem_plan_check({})",
                vec!["NULL"; n].join(", ")
            ),
        };
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
            .fetch_all(&mut *conn)
            .await?;
        sqlx::raw_sql("DEALLOCATE idem_plan_check")
            .execute(&mut *conn)
            .await?;
        plans.push((name.to_owned(), plan.join("\n")));
    }
    Ok(plans)
}

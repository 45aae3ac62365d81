//! Every outcome of a write is counted, traced and audited: on PostgreSQL.
//!
//! One test per binary: the metrics recorder and the tracing subscriber are global to a
//! process, so the counts this test reads are its own.
#![cfg(postgres_suite)]

type Db = sqlx::Postgres;

/// A transaction that holds the audit log against inserts until it is dropped.
async fn hold_audit_log(pool: &sqlx::PgPool) -> sqlx::Transaction<'static, Db> {
    let mut holder = pool.begin().await.expect("begin the holder");
    sqlx::raw_sql("LOCK TABLE idempotent_write_audit_log IN SHARE MODE")
        .execute(&mut *holder)
        .await
        .expect("hold the audit log");
    holder
}

#[path = "observability/suite.rs"]
mod suite;

#[actix_web::test]
async fn every_outcome_is_counted_traced_and_audited() {
    suite::every_outcome_is_counted_traced_and_audited().await;
}

//! Every outcome of a write is counted, traced and audited: on a SQLite file.
//!
//! One test per binary: the metrics recorder and the tracing subscriber are global to a
//! process, so the counts this test reads are its own.

type Db = sqlx::Sqlite;

/// A transaction that holds SQLite's write lock, and so the audit log, until it is dropped.
async fn hold_audit_log(pool: &sqlx::SqlitePool) -> sqlx::Transaction<'static, Db> {
    pool.begin_with("BEGIN IMMEDIATE")
        .await
        .expect("take the write lock")
}

#[path = "observability/suite.rs"]
mod suite;

#[actix_web::test]
async fn every_outcome_is_counted_traced_and_audited() {
    suite::every_outcome_is_counted_traced_and_audited().await;
}

//! Every outcome of a write is counted, traced and audited: on PostgreSQL.
//!
//! One test per binary: the metrics recorder and the tracing subscriber are global to a
//! process, so the counts this test reads are its own.
#![cfg(postgres_suite)]

type Db = sqlx::Postgres;

#[path = "observability/suite.rs"]
mod suite;

#[actix_web::test]
async fn every_outcome_is_counted_traced_and_audited() {
    suite::every_outcome_is_counted_traced_and_audited().await;
}

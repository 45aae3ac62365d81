//! Every row of the HTTP semantics over real HTTP, on PostgreSQL (built with `DATABASE_URL`).
#![cfg(postgres_suite)]

type Db = sqlx::Postgres;

#[path = "http/suite.rs"]
mod postgres;

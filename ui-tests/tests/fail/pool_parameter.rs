//! A protected handler that takes a database pool could write outside the claimed transaction:
//! that write would commit even when the protected write rolls back, and again on every retry.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation, high_risk_mutation};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool};

#[financial_mutation("payTwice", post = "/payments")]
async fn pay_twice(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Postgres>,
    pool: web::Data<PgPool>,
) -> HttpResponse {
    let _ = (write, pool);
    HttpResponse::Created().finish()
}

#[high_risk_mutation("adjustOutside", post = "/adjustments")]
async fn adjust_outside(
    pool: web::Data<Arc<SqlitePool>>,
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
) -> HttpResponse {
    let _ = (write, pool);
    HttpResponse::Created().finish()
}

/// Wrapped in an optional extractor, or in `ThinData`, a pool is still a pool.
#[financial_mutation("payAround", post = "/payments-around")]
async fn pay_around(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Postgres>,
    maybe: Option<web::Data<PgPool>>,
    thin: web::ThinData<PgPool>,
) -> HttpResponse {
    let _ = (write, maybe, thin);
    HttpResponse::Created().finish()
}

fn main() {}

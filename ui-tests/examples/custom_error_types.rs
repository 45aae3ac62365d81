//! Custom error types: a `std::error::Error` (whose transient database causes are retried) and
//! a type that only implements `ResponseError`.

use std::fmt;

use actix_web::{HttpResponse, ResponseError};
use idem_actix::{Idempotency, IdempotencyKey, ProtectedRoutes, WriteContext, financial_mutation};
use sqlx::Sqlite;

#[derive(Debug, thiserror::Error)]
enum PaymentError {
    #[error("the invoice is already paid")]
    AlreadyPaid,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl ResponseError for PaymentError {}

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(
    key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
) -> Result<HttpResponse, PaymentError> {
    sqlx::query("SELECT 1").execute(write.tx()).await?;
    let _ = key;
    Err(PaymentError::AlreadyPaid)
}

#[derive(Debug)]
struct Refused;

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("refused")
    }
}

impl ResponseError for Refused {}

#[financial_mutation("createRefund", post = "/refunds")]
async fn create_refund(
    key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
) -> Result<HttpResponse, Refused> {
    let _ = (key, write);
    Err(Refused)
}

fn gate(idem: Idempotency<Sqlite>) -> ProtectedRoutes<Sqlite> {
    ProtectedRoutes::new(idem)
        .financial(create_payment)
        .financial(create_refund)
}

fn main() {
    let _ = gate;
}

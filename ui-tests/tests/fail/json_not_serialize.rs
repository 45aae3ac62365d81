//! `web::Json<T>` answers only when `T` can be serialized.

use actix_web::web;
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::Sqlite;

struct Receipt {
    amount_cents: i64,
}

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(
    key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
) -> Result<web::Json<Receipt>, actix_web::Error> {
    let _ = (key, write);
    Ok(web::Json(Receipt { amount_cents: 1 }))
}

fn main() {}

//! Behind `impl Responder` a `Result`'s `Err` would be committed and replayed as the answer.

use actix_web::{HttpResponse, Responder};
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::Sqlite;

#[derive(Debug, thiserror::Error)]
#[error("insufficient balance")]
struct InsufficientBalance;

impl actix_web::ResponseError for InsufficientBalance {}

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> impl Responder {
    let _ = (key, write);
    if true {
        return Err(InsufficientBalance);
    }
    Ok(HttpResponse::Created().finish())
}

fn main() {}

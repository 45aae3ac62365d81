use actix_web::{FromRequest, HttpResponse};
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::Sqlite;

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(
    key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
    body: impl FromRequest,
) -> HttpResponse {
    let _ = (key, write, body);
    HttpResponse::Created().finish()
}

fn main() {}

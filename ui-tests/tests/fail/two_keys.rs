use actix_web::HttpResponse;
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::Sqlite;

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(
    key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
    again: IdempotencyKey,
) -> HttpResponse {
    let _ = (key, write, again);
    HttpResponse::Created().finish()
}

fn main() {}

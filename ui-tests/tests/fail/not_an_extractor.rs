use actix_web::HttpResponse;
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::Sqlite;

struct Amount(i64);

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(
    key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
    amount: Amount,
) -> HttpResponse {
    let _ = (key, write, amount.0);
    HttpResponse::Created().finish()
}

fn main() {}

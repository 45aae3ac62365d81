use actix_web::HttpResponse;
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::Sqlite;

#[financial_mutation("createPayment", post = "/payments", ignore_in_fingerprint = "client_sent_at")]
async fn create_payment(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> HttpResponse {
    let _ = (key, write);
    HttpResponse::Created().finish()
}

fn main() {}

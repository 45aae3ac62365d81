use actix_web::HttpResponse;
use idem_actix::{IdempotencyKey, financial_mutation};

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(key: IdempotencyKey, tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>) -> HttpResponse {
    let _ = (key, tx);
    HttpResponse::Created().finish()
}

fn main() {}

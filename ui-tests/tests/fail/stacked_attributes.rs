use actix_web::HttpResponse;
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation, high_risk_mutation};
use sqlx::Sqlite;

#[financial_mutation("createPayment", post = "/payments")]
#[high_risk_mutation("createPaymentAgain", post = "/payments-again")]
async fn create_payment(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> HttpResponse {
    let _ = (key, write);
    HttpResponse::Created().finish()
}

fn main() {}

use actix_web::{HttpResponse, web};
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::Sqlite;

#[financial_mutation("createPayment", post = "/payments")]
fn create_payment(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> HttpResponse {
    let _ = (key, write, web::Bytes::new());
    HttpResponse::Created().finish()
}

fn main() {}

use actix_web::{HttpResponse, web};
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::Sqlite;

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(key: IdempotencyKey, body: web::Bytes) -> HttpResponse {
    let _ = (key, body);
    HttpResponse::Created().finish()
}

fn main() {
    let _: Option<WriteContext<'static, Sqlite>> = None;
}

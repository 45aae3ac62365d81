use actix_web::{App, HttpResponse};
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::Sqlite;

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> HttpResponse {
    let _ = (key, write);
    HttpResponse::Created().finish()
}

fn main() {
    let _ = App::new().service(create_payment);
}

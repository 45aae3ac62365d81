use actix_web::HttpResponse;
use idem_actix::{WriteContext, financial_mutation};
use sqlx::Sqlite;

type IdempotencyKey = String;

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> HttpResponse {
    let _ = (key, write);
    HttpResponse::Created().finish()
}

fn main() {}

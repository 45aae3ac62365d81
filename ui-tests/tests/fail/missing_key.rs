use actix_web::{HttpResponse, web};
use idem_actix::{WriteContext, financial_mutation};
use sqlx::Sqlite;

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(write: &mut WriteContext<'_, Sqlite>, body: web::Bytes) -> HttpResponse {
    let _ = (write, body);
    HttpResponse::Created().finish()
}

fn main() {}

use actix_web::HttpResponse;
use idem_actix::{WriteContext, financial_mutation};
use sqlx::Sqlite;

/// The application's own type of that name is not the key.
#[derive(serde::Deserialize)]
struct IdempotencyKey(String);

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(
    key: actix_web::web::Query<IdempotencyKey>,
    write: &mut WriteContext<'_, Sqlite>,
) -> HttpResponse {
    let _ = (&key.0.0, write);
    HttpResponse::Created().finish()
}

fn main() {}

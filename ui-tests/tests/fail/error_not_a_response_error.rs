use actix_web::HttpResponse;
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::Sqlite;

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(
    key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
) -> Result<HttpResponse, sqlx::Error> {
    let _ = key;
    sqlx::query("INSERT INTO payments DEFAULT VALUES")
        .execute(write.tx())
        .await?;
    Ok(HttpResponse::Created().finish())
}

fn main() {}

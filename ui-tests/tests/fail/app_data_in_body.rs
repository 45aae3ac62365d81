//! A pool fetched from the application's state writes outside the write's transaction.

use actix_web::{HttpRequest, HttpResponse, web};
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::{Sqlite, SqlitePool};

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(
    key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
    request: HttpRequest,
) -> Result<HttpResponse, actix_web::Error> {
    let _ = (key, write);
    let pool = request.app_data::<web::Data<SqlitePool>>().expect("the pool");
    sqlx::query("INSERT INTO payments DEFAULT VALUES")
        .execute(pool.get_ref())
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?;
    Ok(HttpResponse::Created().finish())
}

fn main() {}

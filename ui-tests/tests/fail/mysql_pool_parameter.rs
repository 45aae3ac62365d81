//! A MySQL pool is a pool: a protected handler that takes one could write outside the claimed
//! transaction.

use actix_web::{HttpResponse, web};
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::{MySql, MySqlPool};

#[financial_mutation("payTwice", post = "/payments")]
async fn pay_twice(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, MySql>,
    pool: web::Data<MySqlPool>,
) -> HttpResponse {
    let _ = (write, pool);
    HttpResponse::Created().finish()
}

fn main() {}

//! MySQL and MariaDB are a database like the others: a handler writes through
//! `WriteContext<'_, MySql>` and mounts through `ProtectedRoutes<MySql>`.

use actix_web::{HttpResponse, ResponseError, web};
use idem_actix::{
    Idempotency, IdempotencyKey, ProtectedRoutes, WriteContext, financial_mutation,
    high_risk_mutation,
};
use sqlx::MySql;

#[derive(serde::Deserialize)]
struct Payment {
    amount_cents: i64,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct PaymentError(#[from] sqlx::Error);

impl ResponseError for PaymentError {}

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, MySql>,
    payment: web::Json<Payment>,
) -> Result<HttpResponse, PaymentError> {
    sqlx::query("INSERT INTO payments (id, amount_cents) VALUES (?, ?)")
        .bind(write.entity_id())
        .bind(payment.amount_cents)
        .execute(write.tx())
        .await?;
    Ok(HttpResponse::Created().finish())
}

#[high_risk_mutation("createCustomer", post = "/customers")]
async fn create_customer(
    write: &mut WriteContext<'_, MySql>,
    _key: IdempotencyKey,
) -> HttpResponse {
    let _ = write;
    HttpResponse::Created().finish()
}

fn gate(idem: Idempotency<MySql>) -> ProtectedRoutes<MySql> {
    ProtectedRoutes::new(idem)
        .financial(create_payment)
        .high_risk(create_customer)
}

fn main() {
    let _ = gate;
}

use actix_web::HttpResponse;
use idem_actix::{
    IdempotencyKey, Idempotency, ProtectedRoutes, WriteContext, financial_mutation,
    high_risk_mutation,
};
use sqlx::Sqlite;

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> HttpResponse {
    let _ = (key, write);
    HttpResponse::Created().finish()
}

#[high_risk_mutation("createCustomer", post = "/customers")]
async fn create_customer(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> HttpResponse {
    let _ = (key, write);
    HttpResponse::Created().finish()
}

/// An ordinary actix-web handler: not registered, not protected.
async fn refund() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn gate(idem: Idempotency<Sqlite>) -> ProtectedRoutes<Sqlite> {
    ProtectedRoutes::new(idem)
        .financial(create_payment)
        .high_risk(create_customer)
        .financial(refund)
}

fn main() {}

//! The key and the write context may stand anywhere among the parameters.

use actix_web::{HttpResponse, web};
use idem_actix::{
    Idempotency, IdempotencyKey, ProtectedRoutes, WriteContext, financial_mutation,
    high_risk_mutation,
};
use sqlx::Sqlite;

#[financial_mutation("keyFirst", post = "/first")]
async fn key_first(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> HttpResponse {
    let _ = (key, write);
    HttpResponse::Created().finish()
}

#[financial_mutation("keyBetween", put = "/between/{id}")]
async fn key_between(
    write: &mut WriteContext<'_, Sqlite>,
    key: IdempotencyKey,
    id: web::Path<u64>,
) -> HttpResponse {
    let _ = (key, write, id);
    HttpResponse::Ok().finish()
}

#[high_risk_mutation("keyLast", delete = "/last/{id}")]
async fn key_last(
    id: web::Path<u64>,
    write: &mut WriteContext<'_, Sqlite>,
    idempotency_key: idem_actix::IdempotencyKey,
) -> HttpResponse {
    let _ = (id, write, idempotency_key);
    HttpResponse::NoContent().finish()
}

fn gate(idem: Idempotency<Sqlite>) -> ProtectedRoutes<Sqlite> {
    ProtectedRoutes::new(idem)
        .financial(key_first)
        .financial(key_between)
        .high_risk(key_last)
}

fn main() {
    let _ = gate;
}

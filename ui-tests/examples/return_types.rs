//! `Result` and plain return types: a `Result`'s `Err` refuses the write, anything else that
//! actix-web can answer with is an answer; behind a `Result`, the answer may be opaque.

use actix_web::{HttpResponse, Responder, web};
use idem_actix::{Idempotency, IdempotencyKey, ProtectedRoutes, WriteContext, high_risk_mutation};
use sqlx::Sqlite;

#[high_risk_mutation("plainResponse", post = "/plain")]
async fn plain_response(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> HttpResponse {
    let _ = (key, write);
    HttpResponse::Created().finish()
}

#[high_risk_mutation("jsonAnswer", post = "/json")]
async fn json_answer(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> web::Json<u32> {
    let _ = (key, write);
    web::Json(1)
}

#[high_risk_mutation("opaqueOk", post = "/opaque-ok")]
async fn opaque_ok(
    key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
) -> Result<impl Responder, actix_web::Error> {
    let _ = (key, write);
    Ok("done")
}

#[high_risk_mutation("actixResult", post = "/actix-result")]
async fn actix_result(
    key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
) -> actix_web::Result<web::Json<u32>> {
    let _ = (key, write);
    Err(actix_web::error::ErrorConflict("not now"))
}

#[high_risk_mutation("stdResult", post = "/std-result")]
async fn std_result(
    key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
) -> Result<HttpResponse, actix_web::Error> {
    let _ = (key, write);
    Ok(HttpResponse::Created().finish())
}

fn gate(idem: Idempotency<Sqlite>) -> ProtectedRoutes<Sqlite> {
    ProtectedRoutes::new(idem)
        .high_risk(plain_response)
        .high_risk(json_answer)
        .high_risk(opaque_ok)
        .high_risk(actix_result)
        .high_risk(std_result)
}

fn main() {
    let _ = gate;
}

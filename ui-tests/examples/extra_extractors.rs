//! The handler's own extractors work as in any actix-web handler, on either database.

use actix_web::{HttpRequest, HttpResponse, web};
use idem_actix::{
    Idempotency, IdempotencyKey, ProtectedRoutes, Tenant, WriteContext, financial_mutation,
};
use serde::Deserialize;
use sqlx::Postgres;

#[derive(Deserialize)]
struct Line {
    amount_cents: i64,
}

#[derive(Deserialize)]
struct Dry {
    dry_run: Option<bool>,
}

/// Docs on the handler stay on the generated type.
#[financial_mutation("finalizeInvoice", patch = "/invoices/{id}/lines")]
pub async fn finalize_invoice(
    id: web::Path<String>,
    query: web::Query<Dry>,
    key: IdempotencyKey,
    lines: web::Json<Vec<Line>>,
    tenant: Tenant,
    request: HttpRequest,
    write: &mut WriteContext<'_, Postgres>,
) -> HttpResponse {
    let total: i64 = lines.iter().map(|line| line.amount_cents).sum();
    let _ = (
        id,
        query.dry_run,
        key,
        tenant,
        request.path(),
        write.entity_id(),
        total,
    );
    HttpResponse::Ok().finish()
}

fn gate(idem: Idempotency<Postgres>) -> ProtectedRoutes<Postgres> {
    ProtectedRoutes::new(idem).financial(finalize_invoice)
}

fn main() {
    let _ = gate;
}

//! Every kind of actix-web extractor may stand beside the key and the write context.

use actix_web::{HttpRequest, HttpResponse, web};
use idem_actix::{Idempotency, IdempotencyKey, ProtectedRoutes, WriteContext, high_risk_mutation};
use sqlx::Sqlite;

#[derive(serde::Deserialize)]
struct Line {
    sku: String,
}

#[derive(serde::Deserialize)]
struct Page {
    dry_run: Option<bool>,
}

/// The application's own state, which is not a pool.
struct Settings {
    currency: &'static str,
}

#[high_risk_mutation("everyExtractor", put = "/orders/{id}/lines")]
#[allow(clippy::too_many_arguments)]
async fn every_extractor(
    id: web::Path<u64>,
    query: web::Query<Page>,
    line: web::Json<Line>,
    request: HttpRequest,
    settings: web::Data<Settings>,
    key: IdempotencyKey,
    write: &mut WriteContext<'_, Sqlite>,
    maybe: Option<web::Header<actix_web::http::header::ContentType>>,
) -> actix_web::Result<HttpResponse> {
    let _ = (
        id,
        query.dry_run,
        &line.sku,
        request,
        settings.currency,
        key,
        write,
        maybe,
    );
    Ok(HttpResponse::Ok().finish())
}

fn gate(idem: Idempotency<Sqlite>) -> ProtectedRoutes<Sqlite> {
    ProtectedRoutes::new(idem).high_risk(every_extractor)
}

fn main() {
    let _ = gate;
}

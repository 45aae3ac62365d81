//! A platform crate that re-exports idem under its own path names it with `crate = path`; the
//! expansion then reaches idem only through that path.

mod platform {
    /// The platform's re-export of idem, as a facade crate would offer it.
    pub use ::idem_actix as idem;
}

use actix_web::HttpResponse;
use platform::idem::{
    Idempotency, IdempotencyKey, ProtectedRoutes, WriteContext, financial_mutation,
};
use sqlx::Sqlite;

#[financial_mutation("chargeThroughFacade", post = "/charges", crate = platform::idem)]
async fn charge(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> HttpResponse {
    let _ = (key, write);
    HttpResponse::Created().finish()
}

fn gate(idem: Idempotency<Sqlite>) -> ProtectedRoutes<Sqlite> {
    ProtectedRoutes::new(idem).financial(charge)
}

fn main() {
    let _ = gate;
}

use actix_web::HttpResponse;
use idem_actix::{Idempotency, IdempotencyKey, ProtectedRoutes, WriteContext, financial_mutation};
use sqlx::Sqlite;

// One error, at the attribute: the gate below still accepts the handler's type.
#[financial_mutation("create-payment", post = "/payments")]
async fn create_payment(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> HttpResponse {
    let _ = (key, write);
    HttpResponse::Created().finish()
}

fn gate(idem: Idempotency<Sqlite>) -> ProtectedRoutes<Sqlite> {
    ProtectedRoutes::new(idem).financial(create_payment)
}

fn main() {
    let _ = gate;
}

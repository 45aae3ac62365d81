//! The key and the write context are recognised by type: renamed imports, full paths, aliases
//! and handlers in nested modules compile.

use actix_web::{HttpResponse, web};
use idem_actix::{
    Idempotency, IdempotencyKey as Key, ProtectedRoutes, WriteContext as Tx, financial_mutation,
};
use sqlx::Sqlite;

/// The application's own name for its write context.
type SqliteWrite<'a> = idem_actix::WriteContext<'a, Sqlite>;
/// And for the key.
type ClientKey = idem_actix::IdempotencyKey;

#[financial_mutation("renamedImports", post = "/renamed")]
async fn renamed_imports(key: Key, write: &mut Tx<'_, Sqlite>) -> HttpResponse {
    let _ = (key, write);
    HttpResponse::Created().finish()
}

#[financial_mutation("aliases", post = "/aliases")]
async fn aliases(write: &mut SqliteWrite<'_>, key: ClientKey) -> HttpResponse {
    let _ = (key, write);
    HttpResponse::Created().finish()
}

mod billing {
    pub mod invoices {
        use actix_web::HttpResponse;

        #[idem_actix::high_risk_mutation("nestedFullPaths", post = "/nested")]
        pub async fn nested_full_paths(
            key: ::idem_actix::IdempotencyKey,
            write: &mut ::idem_actix::WriteContext<'_, ::sqlx::Sqlite>,
        ) -> HttpResponse {
            let _ = (key, write);
            HttpResponse::Created().finish()
        }
    }
}

fn gate(idem: Idempotency<Sqlite>) -> ProtectedRoutes<Sqlite> {
    ProtectedRoutes::new(idem)
        .financial(renamed_imports)
        .financial(aliases)
        .high_risk(billing::invoices::nested_full_paths)
}

fn main() {
    let _ = (gate, web::Bytes::new());
}

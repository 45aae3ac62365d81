use idem_actix::{Fingerprint, IdempotencyKey, WriteRequest};
use idem_actix::{IdempotencyStore, StoredResponse, TenantId};
use sqlx::Sqlite;

/// Looks like an operation, but no attribute registered it.
struct Refund;

async fn refund(store: IdempotencyStore<Sqlite>, tenant: TenantId, key: IdempotencyKey) {
    let fingerprint = Fingerprint::of_request("refund", "POST", "/refunds", "", b"{}");
    let _ = store
        .execute(Refund, WriteRequest::new(&tenant, &key, fingerprint), |_write| {
            Box::pin(async { Ok::<_, sqlx::Error>(StoredResponse::new(201, "refunded")) })
        })
        .await;
}

fn main() {}

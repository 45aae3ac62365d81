use idem_actix::{
    Fingerprint, IdempotencyKey, IdempotencyStore, StoredResponse, TenantId, WriteRequest,
};
use sqlx::Sqlite;

async fn close_month(store: IdempotencyStore<Sqlite>, tenant: TenantId, key: IdempotencyKey) {
    let request = WriteRequest::new(&tenant, &key, Fingerprint::of_job("closeMonth", b"2026-11"));
    let _ = store
        .execute("closeMonth", request, |_write| {
            Box::pin(async { Ok::<_, sqlx::Error>(StoredResponse::new(200, "closed")) })
        })
        .await;
}

fn main() {
    let _ = close_month;
}

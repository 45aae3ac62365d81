//! A client retries a payment with the same `Idempotency-Key`: the payment is written once and
//! the retry gets the first answer back. Runs on a SQLite file in a temporary directory.
//!
//! ```text
//! cargo run --example payment_retry
//! ```

use idem_runtime::{
    Fingerprint, IdempotencyKey, IdempotencyStore, Outcome, StoreConfig, StoredResponse, TenantId,
    WriteRequest,
};
use sqlx::Sqlite;

idem_runtime::operation! {
    /// Records a payment. An HTTP handler declares this with `#[financial_mutation]`.
    financial CreatePayment = "createPayment";
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("payments.db").display());
    let store = IdempotencyStore::<Sqlite>::connect(&url, StoreConfig::default()).await?;
    store.migrate().await?;
    sqlx::query("CREATE TABLE payments (id BLOB PRIMARY KEY, amount_cents INTEGER NOT NULL)")
        .execute(store.pool())
        .await?;

    let tenant = TenantId::new("acme")?;
    let key = IdempotencyKey::from_header_value(br#""8e03978e-40d5-43e8-bc93-6894a57f9324""#)?;
    let request = br#"{"amount_cents":1250}"#;
    let fingerprint = Fingerprint::of_request("createPayment", "POST", "/payments", "", request);

    for attempt in ["first request", "client retry"] {
        let outcome = store
            .execute(
                CreatePayment,
                WriteRequest::new(&tenant, &key, fingerprint),
                |write| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO payments (id, amount_cents) VALUES ($1, 1250)")
                            .bind(write.entity_id())
                            .execute(write.tx())
                            .await?;
                        let body = format!(r#"{{"payment_id":"{}"}}"#, write.entity_id());
                        Ok::<_, sqlx::Error>(StoredResponse::new(201, body))
                    })
                },
            )
            .await?;
        match outcome {
            Outcome::New { response, .. } => println!(
                "{attempt}: new write, {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ),
            Outcome::Replayed { response } => println!(
                "{attempt}: replayed, {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ),
            other => println!("{attempt}: {other:?}"),
        }
    }

    let (payments,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM payments")
        .fetch_one(store.pool())
        .await?;
    println!("payments in the database: {payments}");
    Ok(())
}

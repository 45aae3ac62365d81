//! idem's retention run once, as a nightly cron job runs it beside the servers: a binary of its
//! own, which registers no operation. Each key row carries its own expiry, set when it was
//! claimed from its operation's retention, so this run removes only what has expired, whatever
//! the binaries that claimed the keys declared.
//!
//! ```text
//! cargo run --example nightly_maintenance -- postgres://postgres@127.0.0.1/accubooks
//! ```
//!
//! It prints what it removed as one line of JSON, and exits non-zero when the database fails.

use idem_actix::{IdempotencyStore, Maintenance, StoreConfig};
use sqlx::Any;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .ok_or("name the database: nightly_maintenance DATABASE_URL")?;
    let store = IdempotencyStore::<Any>::connect(&url, StoreConfig::default()).await?;
    let report = Maintenance::new(store)
        .keeping_audit_rows()
        .run_once()
        .await?;
    println!(
        "{}",
        serde_json::json!({
            "expired_keys": report.expired_keys,
            "delivered_events": report.delivered_events,
            "audit_rows": report.audit_rows,
        })
    );
    Ok(())
}

//! An operation outside HTTP: declared with `operation!`, written with `execute`, with the key
//! and the tenant supplied by the job.

use idem_actix::{Fingerprint, IdempotencyKey, WriteRequest};
use idem_actix::{IdempotencyStore, Outcome, StoredResponse, TenantId, WriteError};
use sqlx::Postgres;

idem_actix::operation! {
    /// Charges the late fees of overdue invoices, once per company and day.
    pub financial ChargeLateFees = "chargeLateFees";
}

async fn charge_late_fees(
    store: &IdempotencyStore<Postgres>,
    company: &TenantId,
    day: &str,
) -> Result<Outcome, WriteError<sqlx::Error>> {
    // The key names what the job processes, so a rerun of the same day replays.
    let key = IdempotencyKey::parse(&format!("late-fees:{day}")).expect("a valid key");
    let fingerprint = Fingerprint::of_request("chargeLateFees", "JOB", "late-fees", day, b"");
    store
        .execute(
            ChargeLateFees,
            WriteRequest::new(company, &key, fingerprint),
            |write| {
                Box::pin(async move {
                    sqlx::query("UPDATE invoices SET late_fee_cents = 500 WHERE overdue")
                        .execute(write.tx())
                        .await?;
                    Ok(StoredResponse::new(200, "charged"))
                })
            },
        )
        .await
}

fn main() {
    let _ = charge_late_fees;
}

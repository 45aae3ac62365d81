//! `idem maintenance run`: one pass of retention now, or the counts of what it would purge.

use std::time::Duration;

use clap::Subcommand;
use idem_runtime::{IdempotencyStore, Maintenance};
use sqlx::Any;

use crate::report::Report;
use crate::{Failure, millis, sql};

#[derive(Debug, Subcommand)]
pub(crate) enum MaintenanceCommand {
    /// Runs one maintenance pass now (the service runs one every hour).
    Run {
        /// Counts what a run would purge, and deletes nothing.
        #[arg(long)]
        dry_run: bool,
        /// Audit rows are kept this long (as the service's `with_audit_retention`).
        #[arg(long, default_value = "90days", value_parser = humantime::parse_duration)]
        audit_retention: Duration,
        /// Delivered outbox events are kept this long.
        #[arg(long, default_value = "7days", value_parser = humantime::parse_duration)]
        outbox_retention: Duration,
        /// Audit rows are sealed once they are this old (as the service's `with_seal_delay`).
        #[arg(long, default_value = "5min", value_parser = humantime::parse_duration)]
        seal_delay: Duration,
    },
}

pub(crate) async fn run(
    store: &IdempotencyStore<Any>,
    command: MaintenanceCommand,
) -> Result<Report, Failure> {
    let MaintenanceCommand::Run {
        dry_run,
        audit_retention,
        outbox_retention,
        seal_delay,
    } = command;
    if dry_run {
        return counts(store, audit_retention, outbox_retention).await;
    }
    let report = Maintenance::new(store.clone())
        .with_audit_retention(audit_retention)
        .with_outbox_retention(outbox_retention)
        .with_seal_delay(seal_delay)
        .run_once()
        .await?;
    Ok(Report::fields(&[
        ("sealed audit rows", report.sealed_rows.into()),
        ("expired keys purged", report.expired_keys.into()),
        ("delivered events purged", report.delivered_events.into()),
        ("audit rows purged", report.audit_rows.into()),
    ]))
}

/// What a maintenance run would purge now, by the database's clock; nothing is deleted.
async fn counts(
    store: &IdempotencyStore<Any>,
    audit_retention: Duration,
    outbox_retention: Duration,
) -> Result<Report, Failure> {
    const EXPIRED: &str = "SELECT COUNT(*) FROM idempotency_keys WHERE expires_at_ms <= $1";
    const DELIVERED: &str = "SELECT COUNT(*) FROM idem_outbox WHERE delivered_at_ms IS NOT NULL AND delivered_at_ms < $1";
    const AUDIT: &str = "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE created_at_ms < $1";
    let now = store.database_clock_ms().await?;
    let pool = store.pool();
    let mut counts = Vec::new();
    for (statement, bound) in [
        (EXPIRED, now),
        (DELIVERED, now - millis(outbox_retention)),
        (AUDIT, now - millis(audit_retention)),
    ] {
        let count: i64 = sqlx::query_scalar(sql::text(pool, statement))
            .bind(bound)
            .fetch_one(pool)
            .await?;
        counts.push(count);
    }
    Ok(Report::fields(&[
        ("expired keys to purge", counts[0].into()),
        ("delivered events to purge", counts[1].into()),
        ("audit rows past retention", counts[2].into()),
    ])
    .with_note("a dry run: nothing was sealed or deleted (on PostgreSQL the owner's floor may keep audit rows longer)"))
}

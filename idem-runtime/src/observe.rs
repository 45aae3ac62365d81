//! What every write leaves behind for operators: metrics, a tracing span and an audit row.
//!
//! The protocol records all three itself, so no handler can forget them. Metrics and spans are
//! labelled by operation, class and outcome, never by tenant, key or user (unbounded
//! cardinality, and a key replays a stored response); the span carries the tenant and key only
//! as hashes, so logs can be joined to the audit log without leaking either.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::Operation;
use crate::audit::{Failure, WriteOutcome};
use crate::hex::LowerHex;

/// Counter: every write attempt, by `operation`, `class` and `outcome`.
pub const WRITES_TOTAL: &str = "idempotent_writes_total";
/// Counter: replayed writes, by `operation` and `class`.
pub const WRITES_REPLAYED_TOTAL: &str = "idempotent_writes_replayed_total";
/// Counter: failed writes (handler error, panic, store failure), by `operation`, `class` and
/// `reason`.
pub const WRITES_FAILED_TOTAL: &str = "idempotent_writes_failed_total";
/// Counter: outbox events (workflow triggers) recorded by new writes, by `operation` and `class`.
pub const WORKFLOWS_TRIGGERED_TOTAL: &str = "idempotent_writes_workflows_triggered_total";
/// Histogram: the duration of a write in milliseconds, by `operation`, `class` and `outcome`.
pub const WRITE_DURATION_MS: &str = "idempotent_write_duration_ms";

/// Counter: audit rows of outcomes that changed nothing (replays, mismatches, failures,
/// conflicts) that could not be written after their answers, by `operation` and `class`: one
/// per outcome, so a row that stood for repeats counts each. A new write's row commits with
/// the write and is never counted here.
pub const AUDIT_ROWS_LOST_TOTAL: &str = "idempotent_write_audit_rows_lost_total";

/// Gauge: outbox events not delivered yet and not parked.
pub const OUTBOX_EVENTS_PENDING: &str = "idempotent_outbox_events_pending";
/// Gauge: how long the oldest pending outbox event has waited, in seconds.
pub const OUTBOX_OLDEST_PENDING_AGE_SECONDS: &str = "idempotent_outbox_oldest_pending_age_seconds";
/// Gauge: parked outbox events, waiting to be requeued by hand.
pub const OUTBOX_EVENTS_PARKED: &str = "idempotent_outbox_events_parked";
/// Counter: outbox events parked (undecodable, or failed for the last allowed time).
pub const OUTBOX_EVENTS_PARKED_TOTAL: &str = "idempotent_outbox_events_parked_total";
/// Counter: outbox dispatch passes that failed (the database was unreachable or busy); the
/// dispatcher tries again.
pub const OUTBOX_DISPATCH_ERRORS_TOTAL: &str = "idempotent_outbox_dispatch_errors_total";

/// Counter: rows deleted by the maintenance task, by `table` (`keys`, `outbox`, `audit`).
pub const MAINTENANCE_PURGED_ROWS_TOTAL: &str = "idempotent_maintenance_purged_rows_total";
/// Counter: maintenance runs that failed; the next run tries again.
pub const MAINTENANCE_ERRORS_TOTAL: &str = "idempotent_maintenance_errors_total";

/// Every metric idem records, for dashboards and alert rules to be checked against.
pub const METRIC_NAMES: [&str; 13] = [
    WRITES_TOTAL,
    WRITES_REPLAYED_TOTAL,
    WRITES_FAILED_TOTAL,
    WORKFLOWS_TRIGGERED_TOTAL,
    WRITE_DURATION_MS,
    AUDIT_ROWS_LOST_TOTAL,
    OUTBOX_EVENTS_PENDING,
    OUTBOX_OLDEST_PENDING_AGE_SECONDS,
    OUTBOX_EVENTS_PARKED,
    OUTBOX_EVENTS_PARKED_TOTAL,
    OUTBOX_DISPATCH_ERRORS_TOTAL,
    MAINTENANCE_PURGED_ROWS_TOTAL,
    MAINTENANCE_ERRORS_TOTAL,
];

/// Describes every metric idem records (Prometheus' `# HELP`), and registers every counter
/// series of every registered operation at zero (and its duration histogram, empty), so that a fresh instance exposes them before
/// their first event: alerts on `rate(idempotent_writes_failed_total[…])` then see 0, not "no
/// data". Call it after installing the metrics recorder; the Prometheus helper of `idem-actix`
/// and the startup gate do. Calling it again changes nothing.
pub fn register_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

    describe_counter!(
        WRITES_TOTAL,
        Unit::Count,
        "Protected writes, by operation, class and outcome (new, replayed, mismatch, failed, conflict)."
    );
    describe_counter!(
        WRITES_REPLAYED_TOTAL,
        Unit::Count,
        "Requests answered with a stored response, by operation and class."
    );
    describe_counter!(
        WRITES_FAILED_TOTAL,
        Unit::Count,
        "Writes that committed nothing, by operation, class and reason (handler, panic, timeout, store), and writes whose commit could not be settled (unknown)."
    );
    describe_counter!(
        WORKFLOWS_TRIGGERED_TOTAL,
        Unit::Count,
        "Outbox events recorded by new writes, by operation and class."
    );
    describe_histogram!(
        WRITE_DURATION_MS,
        Unit::Milliseconds,
        "Duration of a protected write, by operation, class and outcome."
    );
    describe_counter!(
        AUDIT_ROWS_LOST_TOTAL,
        Unit::Count,
        "Audit rows of outcomes that changed nothing that the database refused or a shutdown gave up on, one per outcome, by operation and class."
    );
    describe_gauge!(
        OUTBOX_EVENTS_PENDING,
        Unit::Count,
        "Outbox events not delivered yet and not parked."
    );
    describe_gauge!(
        OUTBOX_OLDEST_PENDING_AGE_SECONDS,
        Unit::Seconds,
        "How long the oldest pending outbox event has waited."
    );
    describe_gauge!(
        OUTBOX_EVENTS_PARKED,
        Unit::Count,
        "Parked outbox events, waiting to be requeued by hand."
    );
    describe_counter!(
        OUTBOX_EVENTS_PARKED_TOTAL,
        Unit::Count,
        "Outbox events parked after their last allowed attempt, or undecodable."
    );
    describe_counter!(
        OUTBOX_DISPATCH_ERRORS_TOTAL,
        Unit::Count,
        "Outbox dispatch passes that failed on the database and were retried."
    );
    describe_counter!(
        MAINTENANCE_PURGED_ROWS_TOTAL,
        Unit::Count,
        "Rows deleted by retention, by table (keys, outbox, audit)."
    );
    describe_counter!(
        MAINTENANCE_ERRORS_TOTAL,
        Unit::Count,
        "Maintenance runs that failed."
    );

    for operation in crate::registered_operations() {
        let (name, class) = (operation.name(), operation.class().as_str());
        for outcome in [
            WriteOutcome::New,
            WriteOutcome::Replayed,
            WriteOutcome::Mismatch,
            WriteOutcome::Failed(Failure::Handler),
            WriteOutcome::Conflict,
        ] {
            metrics::counter!(WRITES_TOTAL, "operation" => name, "class" => class, "outcome" => outcome.as_str()).increment(0);
            // Registering the series is enough: it has no sample until the first write.
            let _ = metrics::histogram!(WRITE_DURATION_MS, "operation" => name, "class" => class, "outcome" => outcome.as_str());
        }
        for reason in [
            Failure::Handler,
            Failure::Panic,
            Failure::Store,
            Failure::Timeout,
            Failure::Unknown,
        ] {
            let reason = WriteOutcome::Failed(reason).failure().unwrap_or("unknown");
            metrics::counter!(WRITES_FAILED_TOTAL, "operation" => name, "class" => class, "reason" => reason).increment(0);
        }
        metrics::counter!(WRITES_REPLAYED_TOTAL, "operation" => name, "class" => class)
            .increment(0);
        metrics::counter!(WORKFLOWS_TRIGGERED_TOTAL, "operation" => name, "class" => class)
            .increment(0);
        metrics::counter!(AUDIT_ROWS_LOST_TOTAL, "operation" => name, "class" => class)
            .increment(0);
    }
    metrics::counter!(OUTBOX_EVENTS_PARKED_TOTAL).increment(0);
    metrics::counter!(OUTBOX_DISPATCH_ERRORS_TOTAL).increment(0);
    for table in ["keys", "outbox", "audit"] {
        metrics::counter!(MAINTENANCE_PURGED_ROWS_TOTAL, "table" => table).increment(0);
    }
    metrics::counter!(MAINTENANCE_ERRORS_TOTAL).increment(0);
}

/// Lower-case hex SHA-256 of `value`: how keys appear in the audit log and in spans.
pub fn sha256_hex(value: &[u8]) -> String {
    LowerHex(&Sha256::digest(value)).to_string()
}

/// Records the metrics of one finished write.
pub(crate) fn record_metrics(
    operation: &Operation,
    outcome: WriteOutcome,
    events: u32,
    elapsed: Duration,
) {
    let (name, class) = (operation.name(), operation.class().as_str());
    metrics::counter!(WRITES_TOTAL, "operation" => name, "class" => class, "outcome" => outcome.as_str())
        .increment(1);
    metrics::histogram!(WRITE_DURATION_MS, "operation" => name, "class" => class, "outcome" => outcome.as_str())
        .record(elapsed.as_secs_f64() * 1000.0);
    match outcome {
        WriteOutcome::Replayed => {
            metrics::counter!(WRITES_REPLAYED_TOTAL, "operation" => name, "class" => class)
                .increment(1);
        }
        WriteOutcome::Failed(_) => {
            let reason = outcome.failure().unwrap_or("unknown");
            metrics::counter!(WRITES_FAILED_TOTAL, "operation" => name, "class" => class, "reason" => reason)
                .increment(1);
        }
        WriteOutcome::New if events > 0 => {
            metrics::counter!(WORKFLOWS_TRIGGERED_TOTAL, "operation" => name, "class" => class)
                .increment(u64::from(events));
        }
        _ => {}
    }
}

/// Counts audit rows that were not written, by their operations.
pub(crate) fn record_lost_audit_rows(operations: impl IntoIterator<Item = &'static Operation>) {
    for operation in operations {
        metrics::counter!(AUDIT_ROWS_LOST_TOTAL, "operation" => operation.name(), "class" => operation.class().as_str())
            .increment(1);
    }
}

//! Every statement the protocol sends on PostgreSQL, by name: what the plan test checks
//! (`protocol::postgres_only::no_protocol_statement_scans_a_whole_table`), so that a statement
//! that would read a whole table as it grows fails a test instead of a service a year later.

use super::Dialect;
use super::sql::*;
use crate::audit::sql::*;

/// The statements on the write path, the outbox's and retention's, each by name; a new
/// statement belongs here. Left out: `_idem_migrations` and the seals listing of a
/// verification, which read their whole (small) tables by design, the constant
/// `SELECT idem_now_ms()`, and the audit purge, a function of the owner's whose statement the
/// test reads from the database itself.
pub fn postgres_statements() -> Vec<(&'static str, &'static str)> {
    let postgres = Dialect::Postgres;
    vec![
        ("find_record", FIND_RECORD.get(postgres)),
        ("claim", CLAIM.get(postgres)),
        ("store_response", STORE_RESPONSE.get(postgres)),
        ("record_write_together", RECORD_WRITE_TOGETHER),
        ("append_audit", APPEND_AUDIT.get(postgres)),
        ("record_event", RECORD_EVENT.get(postgres)),
        ("claim_events", CLAIM_EVENTS.get(postgres)),
        ("defer_event", DEFER_EVENT.get(postgres)),
        (
            "record_delivery_failure",
            RECORD_DELIVERY_FAILURE.get(postgres),
        ),
        ("parked_at", PARKED_AT.get(postgres)),
        ("parked_events", PARKED_EVENTS.get(postgres)),
        ("requeue_parked", REQUEUE_PARKED.get(postgres)),
        ("outbox_backlog", OUTBOX_BACKLOG.get(postgres)),
        ("mark_delivered", MARK_DELIVERED.get(postgres)),
        ("purge_delivered", PURGE_DELIVERED.get(postgres)),
        ("purge_expired", PURGE_EXPIRED.get(postgres)),
        ("audit_rows_to_seal", AUDIT_ROWS_TO_SEAL.get(postgres)),
        ("latest_audit_seal", LATEST_AUDIT_SEAL),
        ("record_audit_seal", RECORD_AUDIT_SEAL.get(postgres)),
        ("oldest_audit_seq", OLDEST_AUDIT_SEQ),
    ]
}

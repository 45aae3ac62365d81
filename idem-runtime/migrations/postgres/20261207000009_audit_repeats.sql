-- A replay flood must not grow the audit log by a row per request: the replays, mismatches and
-- conflicts of one key (same operation, tenant, user, request fingerprint, outcome and status)
-- that happen within the coalescing window are written as one row, which counts them
-- (repeat_count) and says when the first of them happened (first_seen_at_ms; created_at_ms is
-- the last). Rows written before this migration stand for one outcome each.
ALTER TABLE idempotent_write_audit_log ADD COLUMN repeat_count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE idempotent_write_audit_log ADD COLUMN first_seen_at_ms BIGINT;

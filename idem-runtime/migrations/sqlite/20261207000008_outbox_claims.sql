-- Several dispatchers share one outbox: each claims a batch of due events by moving their
-- next_attempt_at_ms past a lease (SQLite's single writer serializes the claims), and the
-- events of one write are delivered in the order the write recorded them.
ALTER TABLE idem_outbox ADD COLUMN sequence_in_write INTEGER NOT NULL DEFAULT 0;

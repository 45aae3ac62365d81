-- Several dispatchers share one outbox: each claims a batch of due events by moving their
-- next_attempt_at_ms past a lease (FOR UPDATE SKIP LOCKED, MySQL 8 and MariaDB 10.6+, so two
-- never claim one event), and the events of one write are delivered in the order the write
-- recorded them.
ALTER TABLE idem_outbox ADD COLUMN sequence_in_write INTEGER NOT NULL DEFAULT 0;

-- An event is delivered at least once, retried with backoff, and parked after a bounded number
-- of failed attempts (no handler, an undecodable row, a handler that keeps failing), with its
-- attempts and last error kept: a parked or backing-off event never blocks the ones behind it.
ALTER TABLE idem_outbox
    ADD COLUMN attempts INT NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at_ms BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN last_error TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    ADD COLUMN parked_at_ms BIGINT,
    DROP INDEX idem_outbox_pending,
    ADD INDEX idem_outbox_due (delivered_at_ms, parked_at_ms, next_attempt_at_ms, created_at_ms),
    ADD INDEX idem_outbox_parked (parked_at_ms),
    ADD INDEX idem_outbox_delivered (delivered_at_ms);

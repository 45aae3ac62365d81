-- An event is delivered at least once, retried with backoff, and parked after a bounded number
-- of failed attempts (no handler, an undecodable row, a handler that keeps failing), with its
-- attempts and last error kept: a parked or backing-off event never blocks the ones behind it.
ALTER TABLE idem_outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE idem_outbox ADD COLUMN next_attempt_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE idem_outbox ADD COLUMN last_error TEXT;
ALTER TABLE idem_outbox ADD COLUMN parked_at_ms BIGINT;

DROP INDEX idem_outbox_pending;
CREATE INDEX idem_outbox_due ON idem_outbox (next_attempt_at_ms, created_at_ms)
    WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL;
CREATE INDEX idem_outbox_parked ON idem_outbox (parked_at_ms) WHERE parked_at_ms IS NOT NULL;
-- Delivered events are purged after their retention.
CREATE INDEX idem_outbox_delivered ON idem_outbox (delivered_at_ms) WHERE delivered_at_ms IS NOT NULL;

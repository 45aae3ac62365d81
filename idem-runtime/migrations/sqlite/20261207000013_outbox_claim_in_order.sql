-- The dispatcher's claim reads the due events in the order it delivers them (next attempt,
-- creation, place in the write, id): the index holds the whole order, so a backlog is read
-- batch by batch instead of sorted whole for each claim.
DROP INDEX idem_outbox_due;
CREATE INDEX idem_outbox_due ON idem_outbox (next_attempt_at_ms, created_at_ms, sequence_in_write, event_id)
    WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL;

-- The dispatcher's claim reads the due events in the order it delivers them (next attempt,
-- creation, place in the write, id). The index held the first two only, so with a backlog of
-- a million due events the claim's generic plan read and sorted all of them for each batch.
-- With the whole order in the index the claim reads its batch's entries and stops.
DROP INDEX idem_outbox_due;
CREATE INDEX idem_outbox_due ON idem_outbox (next_attempt_at_ms, created_at_ms, sequence_in_write, event_id)
    WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL;

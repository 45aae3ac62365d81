-- The dispatcher's claim reads the due events in the order it delivers them (next attempt,
-- creation, place in the write, id): the index holds the whole order, so a backlog is read
-- batch by batch instead of sorted whole for each claim.
ALTER TABLE idem_outbox
    DROP INDEX idem_outbox_due,
    ADD INDEX idem_outbox_due (delivered_at_ms, parked_at_ms, next_attempt_at_ms, created_at_ms, sequence_in_write, event_id);

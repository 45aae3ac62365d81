-- Each key carries its own expiry, set when it is claimed from its operation's retention, so
-- that a purge run by any binary (a server with 24 hours, a job with 400 days) removes only
-- what has expired by the row's own word. Rows claimed before this migration get the default
-- retention, 24 hours after their claim.
ALTER TABLE idempotency_keys ADD COLUMN expires_at_ms BIGINT;
UPDATE idempotency_keys SET expires_at_ms = created_at_ms + 86400000;
ALTER TABLE idempotency_keys ALTER COLUMN expires_at_ms SET NOT NULL;
DROP INDEX idempotency_keys_created_at;
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at_ms);

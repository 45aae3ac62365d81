-- The database's clock, read once per statement, as migration 5 meant: a STABLE SQL function is
-- inlined, and clock_timestamp() in it was read at every call, so two readings in one statement
-- could differ by a millisecond (an audit row's first_seen_at_ms after its created_at_ms).
-- statement_timestamp() is the time the statement began: one value for the whole statement,
-- as MySQL's CURRENT_TIMESTAMP(3) and SQLite's 'now' are.
CREATE OR REPLACE FUNCTION idem_now_ms() RETURNS BIGINT
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT $$;

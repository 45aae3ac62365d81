-- The database's clock in Unix milliseconds. Key expiry and takeover read it, so that every
-- application node decides them by one clock, whatever the skew between the nodes' own.
-- STABLE (one reading per statement), so a purge's comparison can use the index.
CREATE FUNCTION idem_now_ms() RETURNS BIGINT
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT $$;

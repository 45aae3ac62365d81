-- The retention purge finds its batch's rows by id (`= ANY(ARRAY(…))`, an index lookup): with
-- `IN (…)` a generic plan of the DELETE could hash-join a scan of the whole log, which grows
-- with the retention. Everything else about the function is as before.
CREATE OR REPLACE FUNCTION idempotent_write_audit_purge(older_than_ms BIGINT, max_rows INTEGER) RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    horizon BIGINT;
    purged  BIGINT;
BEGIN
    SELECT idem_now_ms() - GREATEST(older_than_ms, min_retention_ms) INTO horizon
    FROM idempotent_write_audit_settings;
    IF horizon IS NULL THEN
        RAISE EXCEPTION 'idempotent_write_audit_settings has no row: audit retention is unset';
    END IF;
    INSERT INTO idempotent_write_audit_maintenance (horizon_ms) VALUES (horizon);
    DELETE FROM idempotent_write_audit_log WHERE id = ANY(ARRAY(
        SELECT id FROM idempotent_write_audit_log
        WHERE created_at_ms < horizon
        ORDER BY created_at_ms
        LIMIT max_rows
    ));
    GET DIAGNOSTICS purged = ROW_COUNT;
    DELETE FROM idempotent_write_audit_maintenance;
    RETURN purged;
END;
$$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION idempotent_write_audit_purge(BIGINT, INTEGER) SET search_path = %I, pg_temp', current_schema());
END;
$$;

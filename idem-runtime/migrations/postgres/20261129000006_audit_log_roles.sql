-- The audit log stays append-only against the application's own runtime role, not only against
-- honest code. A production deployment uses two roles: an owner that runs these migrations
-- (and owns every table, so only it could disable a trigger), and a runtime role that serves
-- requests, given exactly what it needs by `SELECT idem_grant_runtime_role('<role>')`: on the
-- audit log, INSERT and SELECT only.

-- The floor of audit retention: no purge deletes rows younger than this. Only the owner can
-- change it (90 days by default, the reference design's hot retention).
CREATE TABLE idempotent_write_audit_settings (
    singleton        BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    min_retention_ms BIGINT  NOT NULL CHECK (min_retention_ms >= 0)
);
INSERT INTO idempotent_write_audit_settings (min_retention_ms) VALUES (90 * 24 * 3600 * 1000::BIGINT);

-- Retention's one way to delete audit rows: as the owner, in bounded batches, never younger
-- than the floor whatever the caller asks. The horizon it opens lives only in its own
-- transaction; the runtime role cannot insert one itself.
CREATE FUNCTION idempotent_write_audit_purge(older_than_ms BIGINT, max_rows INTEGER) RETURNS BIGINT
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
    DELETE FROM idempotent_write_audit_log WHERE id IN (
        SELECT id FROM idempotent_write_audit_log
        WHERE created_at_ms < horizon
        ORDER BY created_at_ms
        LIMIT max_rows
    );
    GET DIAGNOSTICS purged = ROW_COUNT;
    DELETE FROM idempotent_write_audit_maintenance;
    RETURN purged;
END;
$$;
REVOKE ALL ON FUNCTION idempotent_write_audit_purge(BIGINT, INTEGER) FROM PUBLIC;

-- Gives a runtime role what serving needs, and no more. Run by the owner after migrating.
CREATE FUNCTION idem_grant_runtime_role(runtime_role NAME) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    schema_name NAME := current_schema();
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, runtime_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.idempotency_keys, %I.idem_outbox TO %I',
        schema_name, schema_name, runtime_role);
    EXECUTE format('GRANT SELECT, INSERT ON %I.idempotent_write_audit_log TO %I', schema_name, runtime_role);
    EXECUTE format('GRANT SELECT ON %I.idempotent_write_audit_maintenance, %I.idempotent_write_audit_settings, %I._idem_migrations TO %I',
        schema_name, schema_name, schema_name, runtime_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.idempotent_write_audit_purge(BIGINT, INTEGER), %I.idem_now_ms() TO %I',
        schema_name, schema_name, runtime_role);
END;
$$;
REVOKE ALL ON FUNCTION idem_grant_runtime_role(NAME) FROM PUBLIC;

-- Every function that names a table resolves it in this schema, and temporary tables last: a
-- `CREATE TEMP TABLE idempotent_write_audit_maintenance` cannot stand in for the real one.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION idempotent_write_audit_log_append_only() SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION idempotent_write_audit_purge(BIGINT, INTEGER) SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION idem_grant_runtime_role(NAME) SET search_path = %I, pg_temp', current_schema());
END;
$$;

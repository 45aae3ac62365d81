-- A sealed audit log: the owner of the tables can disable a trigger, so append-only is proven
-- after the fact by a chain of digests, which maintenance extends off the write path and
-- `idem audit verify` recomputes.
--
-- Each row gets its place in the order of insertion (seq, never reused) and the database's
-- clock at its insertion (inserted_at_ms): a seal covers only rows inserted long enough ago
-- that no transaction holding a smaller seq can still be open.
ALTER TABLE idempotent_write_audit_log ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
ALTER TABLE idempotent_write_audit_log ADD COLUMN inserted_at_ms BIGINT NOT NULL DEFAULT idem_now_ms();
CREATE UNIQUE INDEX idempotent_write_audit_log_seq ON idempotent_write_audit_log (seq);

-- One row per seal, in order: the rows with previous seal's last_seq < seq <= last_seq, their
-- count, and the SHA-256 (hex) over previous_digest and their canonical encoding.
CREATE TABLE idempotent_write_audit_seals (
    seal            BIGINT PRIMARY KEY CHECK (seal > 0),
    first_seq       BIGINT NOT NULL,
    last_seq        BIGINT NOT NULL CHECK (last_seq >= first_seq),
    row_count       BIGINT NOT NULL CHECK (row_count > 0),
    digest          TEXT   NOT NULL,
    previous_digest TEXT   NOT NULL,
    sealed_at_ms    BIGINT NOT NULL
);

CREATE FUNCTION idempotent_write_audit_seals_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'idempotent_write_audit_seals is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER idempotent_write_audit_seals_append_only
    BEFORE UPDATE OR DELETE ON idempotent_write_audit_seals
    FOR EACH ROW EXECUTE FUNCTION idempotent_write_audit_seals_append_only();

CREATE TRIGGER idempotent_write_audit_seals_no_truncate
    BEFORE TRUNCATE ON idempotent_write_audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION idempotent_write_audit_seals_append_only();

-- The runtime role seals (maintenance runs as it): it may read and add seals, nothing more.
CREATE OR REPLACE FUNCTION idem_grant_runtime_role(runtime_role NAME) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    schema_name NAME := current_schema();
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, runtime_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.idempotency_keys, %I.idem_outbox TO %I',
        schema_name, schema_name, runtime_role);
    EXECUTE format('GRANT SELECT, INSERT ON %I.idempotent_write_audit_log, %I.idempotent_write_audit_seals TO %I',
        schema_name, schema_name, runtime_role);
    EXECUTE format('GRANT SELECT ON %I.idempotent_write_audit_maintenance, %I.idempotent_write_audit_settings, %I._idem_migrations TO %I',
        schema_name, schema_name, schema_name, runtime_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.idempotent_write_audit_purge(BIGINT, INTEGER), %I.idem_now_ms() TO %I',
        schema_name, schema_name, runtime_role);
END;
$$;
REVOKE ALL ON FUNCTION idem_grant_runtime_role(NAME) FROM PUBLIC;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION idem_grant_runtime_role(NAME) SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION idempotent_write_audit_seals_append_only() SET search_path = %I, pg_temp', current_schema());
END;
$$;

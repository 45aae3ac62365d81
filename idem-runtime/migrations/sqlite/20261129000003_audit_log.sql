-- One row per attempt outcome of a protected write: new, replayed, mismatch, failed, conflict.
-- A new write's row commits in the write's own transaction; the others are written after.
CREATE TABLE idempotent_write_audit_log (
    id            TEXT    PRIMARY KEY,
    operation     TEXT    NOT NULL,
    class         TEXT    NOT NULL,
    company_id    TEXT    NOT NULL,
    user_id       TEXT,
    key_hash      TEXT    NOT NULL,   -- hex SHA-256 of the Idempotency-Key
    entity_id     TEXT    NOT NULL,
    fingerprint   TEXT    NOT NULL,   -- hex SHA-256 of the request
    outcome       TEXT    NOT NULL CHECK (outcome IN ('new', 'replayed', 'mismatch', 'failed', 'conflict')),
    status        INTEGER,            -- the stored response's status, for new and replayed
    failure       TEXT,               -- handler, panic or store, for failed
    attempts      INTEGER NOT NULL,
    duration_ms   REAL    NOT NULL,
    request_id    TEXT,
    created_at_ms INTEGER NOT NULL
);

CREATE INDEX idempotent_write_audit_log_key ON idempotent_write_audit_log (company_id, key_hash);
CREATE INDEX idempotent_write_audit_log_created_at ON idempotent_write_audit_log (created_at_ms);

-- The retention horizon of a running maintenance: rows older than it may be deleted, by the
-- maintenance transaction that inserted it and nobody else (it is never committed).
CREATE TABLE idempotent_write_audit_maintenance (
    horizon_ms INTEGER NOT NULL
);

-- The database itself keeps the log append-only.
CREATE TRIGGER idempotent_write_audit_log_no_update
    BEFORE UPDATE ON idempotent_write_audit_log
BEGIN
    SELECT RAISE(ABORT, 'idempotent_write_audit_log is append-only: UPDATE refused');
END;

CREATE TRIGGER idempotent_write_audit_log_no_delete
    BEFORE DELETE ON idempotent_write_audit_log
    WHEN NOT (OLD.created_at_ms < (SELECT MAX(horizon_ms) FROM idempotent_write_audit_maintenance))
      OR (SELECT MAX(horizon_ms) FROM idempotent_write_audit_maintenance) IS NULL
BEGIN
    SELECT RAISE(ABORT, 'idempotent_write_audit_log is append-only: DELETE refused');
END;

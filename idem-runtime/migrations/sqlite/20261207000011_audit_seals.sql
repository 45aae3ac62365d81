-- A sealed audit log: any writer of the file can drop a trigger, so append-only is proven
-- after the fact by a chain of digests, which maintenance extends off the write path and
-- `idem audit verify` recomputes.
--
-- Each row gets its place in the order of insertion (seq, never reused: AUTOINCREMENT) and the
-- database's clock at its insertion (inserted_at_ms). SQLite cannot add such a column to a
-- table: the log is rebuilt, its rows copied in the order they were written (dropping a table
-- fires no trigger), and its indexes and triggers made again.
CREATE TABLE idempotent_write_audit_log_sealed (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    operation        TEXT    NOT NULL,
    class            TEXT    NOT NULL,
    company_id       TEXT    NOT NULL,
    user_id          TEXT,
    key_hash         TEXT    NOT NULL,
    entity_id        TEXT    NOT NULL,
    fingerprint      TEXT    NOT NULL,
    outcome          TEXT    NOT NULL CHECK (outcome IN ('new', 'replayed', 'mismatch', 'failed', 'conflict')),
    status           INTEGER,
    failure          TEXT,
    attempts         INTEGER NOT NULL,
    duration_ms      REAL    NOT NULL,
    request_id       TEXT,
    created_at_ms    INTEGER NOT NULL,
    repeat_count     INTEGER NOT NULL DEFAULT 1,
    first_seen_at_ms INTEGER,
    inserted_at_ms   INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);

INSERT INTO idempotent_write_audit_log_sealed
    (id, operation, class, company_id, user_id, key_hash, entity_id, fingerprint, outcome, status,
     failure, attempts, duration_ms, request_id, created_at_ms, repeat_count, first_seen_at_ms)
SELECT id, operation, class, company_id, user_id, key_hash, entity_id, fingerprint, outcome, status,
     failure, attempts, duration_ms, request_id, created_at_ms, repeat_count, first_seen_at_ms
FROM idempotent_write_audit_log
ORDER BY rowid;

DROP TABLE idempotent_write_audit_log;
ALTER TABLE idempotent_write_audit_log_sealed RENAME TO idempotent_write_audit_log;

CREATE INDEX idempotent_write_audit_log_key ON idempotent_write_audit_log (company_id, key_hash);
CREATE INDEX idempotent_write_audit_log_created_at ON idempotent_write_audit_log (created_at_ms);

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

-- One row per seal, in order: the rows with previous seal's last_seq < seq <= last_seq, their
-- count, and the SHA-256 (hex) over previous_digest and their canonical encoding.
CREATE TABLE idempotent_write_audit_seals (
    seal            INTEGER PRIMARY KEY CHECK (seal > 0),
    first_seq       INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL CHECK (last_seq >= first_seq),
    row_count       INTEGER NOT NULL CHECK (row_count > 0),
    digest          TEXT    NOT NULL,
    previous_digest TEXT    NOT NULL,
    sealed_at_ms    INTEGER NOT NULL
);

CREATE TRIGGER idempotent_write_audit_seals_no_update
    BEFORE UPDATE ON idempotent_write_audit_seals
BEGIN
    SELECT RAISE(ABORT, 'idempotent_write_audit_seals is append-only: UPDATE refused');
END;

CREATE TRIGGER idempotent_write_audit_seals_no_delete
    BEFORE DELETE ON idempotent_write_audit_seals
BEGIN
    SELECT RAISE(ABORT, 'idempotent_write_audit_seals is append-only: DELETE refused');
END;

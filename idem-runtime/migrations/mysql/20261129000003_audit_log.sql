-- One row per attempt outcome of a protected write: new, replayed, mismatch, failed, conflict.
-- A new write's row commits in the write's own transaction; the others are written after.
CREATE TABLE idempotent_write_audit_log (
    id            CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    operation     VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    class         VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    company_id    VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id       VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    key_hash      CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- hex SHA-256 of the Idempotency-Key
    entity_id     CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    fingerprint   CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- hex SHA-256 of the request
    outcome       VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL
                  CHECK (outcome IN ('new', 'replayed', 'mismatch', 'failed', 'conflict')),
    status        INT,                   -- the stored response's status, for new and replayed
    failure       VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin,  -- handler, panic, timeout or store
    attempts      INT NOT NULL,
    duration_ms   DOUBLE NOT NULL,
    request_id    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    created_at_ms BIGINT NOT NULL,
    INDEX idempotent_write_audit_log_key (company_id, key_hash),
    INDEX idempotent_write_audit_log_created_at (created_at_ms)
) ENGINE = InnoDB;

-- The retention horizon of a running maintenance: rows older than it may be deleted, by the
-- maintenance transaction that inserted it and nobody else (it is never committed).
CREATE TABLE idempotent_write_audit_maintenance (
    horizon_ms BIGINT NOT NULL
) ENGINE = InnoDB;

-- The database itself keeps the log append-only (TRUNCATE and DROP bypass triggers: serve as a
-- user without the DROP privilege on it, see README.md).
CREATE TRIGGER idempotent_write_audit_log_no_update
    BEFORE UPDATE ON idempotent_write_audit_log FOR EACH ROW
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'idempotent_write_audit_log is append-only: UPDATE refused';

CREATE TRIGGER idempotent_write_audit_log_no_delete
    BEFORE DELETE ON idempotent_write_audit_log FOR EACH ROW
BEGIN
    IF NOT (OLD.created_at_ms < (SELECT MAX(horizon_ms) FROM idempotent_write_audit_maintenance))
       OR (SELECT MAX(horizon_ms) FROM idempotent_write_audit_maintenance) IS NULL THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'idempotent_write_audit_log is append-only: DELETE refused';
    END IF;
END;

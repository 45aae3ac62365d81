-- A sealed audit log: the owner of the tables can drop a trigger, so append-only is proven
-- after the fact by a chain of digests, which maintenance extends off the write path and
-- `idem audit verify` recomputes.
--
-- Each row gets its place in the order of insertion (seq, never reused) and the database's
-- clock at its insertion (inserted_at_ms): a seal covers only rows inserted long enough ago
-- that no transaction holding a smaller seq can still be open.
ALTER TABLE idempotent_write_audit_log
    ADD COLUMN seq BIGINT NOT NULL AUTO_INCREMENT,
    ADD COLUMN inserted_at_ms BIGINT NOT NULL DEFAULT (CAST(UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3)) * 1000 AS SIGNED)),
    ADD UNIQUE INDEX idempotent_write_audit_log_seq (seq);

-- One row per seal, in order: the rows with previous seal's last_seq < seq <= last_seq, their
-- count, and the SHA-256 (hex) over previous_digest and their canonical encoding.
CREATE TABLE idempotent_write_audit_seals (
    seal            BIGINT NOT NULL PRIMARY KEY CHECK (seal > 0),
    first_seq       BIGINT NOT NULL,
    last_seq        BIGINT NOT NULL,
    row_count       BIGINT NOT NULL CHECK (row_count > 0),
    digest          CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    previous_digest CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    sealed_at_ms    BIGINT NOT NULL,
    CHECK (last_seq >= first_seq)
) ENGINE = InnoDB;

CREATE TRIGGER idempotent_write_audit_seals_no_update
    BEFORE UPDATE ON idempotent_write_audit_seals FOR EACH ROW
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'idempotent_write_audit_seals is append-only: UPDATE refused';

CREATE TRIGGER idempotent_write_audit_seals_no_delete
    BEFORE DELETE ON idempotent_write_audit_seals FOR EACH ROW
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'idempotent_write_audit_seals is append-only: DELETE refused';

-- One row per (tenant, operation, key). The row is inserted uncommitted to claim the key, the
-- response is stored in the same transaction, and both commit with the business write: a
-- committed row always carries its response.
--
-- Tenant ids and keys are visible ASCII (the parsers refuse anything else), stored as ASCII
-- with a binary collation: a key is case-sensitive and compared byte for byte, and the primary
-- key stays small. DDL commits implicitly on MySQL: each migration is one statement per table.
CREATE TABLE idempotency_keys (
    tenant_id        VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    operation        VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    idempotency_key  VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    fingerprint      VARBINARY(64) NOT NULL,
    entity_id        CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    attempt_id       BIGINT NOT NULL,
    response_status  INT,
    response_headers LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    response_body    LONGBLOB,
    created_at_ms    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, operation, idempotency_key),
    INDEX idempotency_keys_created_at (created_at_ms)
) ENGINE = InnoDB;

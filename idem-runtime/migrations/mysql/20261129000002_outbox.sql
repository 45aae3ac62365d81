-- Events a write records for after its commit (workflow triggers), in the write's own
-- transaction: committed with it or not at all. A dispatcher delivers them at least once.
CREATE TABLE idem_outbox (
    event_id        CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    tenant_id       VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    operation       VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    entity_id       CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    topic           VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    payload         LONGBLOB NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    delivered_at_ms BIGINT,
    INDEX idem_outbox_pending (delivered_at_ms, created_at_ms)
) ENGINE = InnoDB;

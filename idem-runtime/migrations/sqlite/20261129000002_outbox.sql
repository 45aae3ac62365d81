-- Events a write records for after its commit (workflow triggers), in the write's own
-- transaction: committed with it or not at all. A dispatcher delivers them at least once.
CREATE TABLE idem_outbox (
    event_id        TEXT    PRIMARY KEY,
    tenant_id       TEXT    NOT NULL,
    operation       TEXT    NOT NULL,
    entity_id       TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    delivered_at_ms INTEGER
);

CREATE INDEX idem_outbox_pending ON idem_outbox (created_at_ms) WHERE delivered_at_ms IS NULL;

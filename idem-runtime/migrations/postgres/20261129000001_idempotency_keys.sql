-- One row per (tenant, operation, key). The row is inserted uncommitted to claim the key, the
-- response is stored in the same transaction, and both commit with the business write: a
-- committed row always carries its response.
CREATE TABLE idempotency_keys (
    tenant_id        TEXT    NOT NULL,
    operation        TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    fingerprint      BYTEA   NOT NULL,
    entity_id        TEXT    NOT NULL,
    attempt_id       BIGINT  NOT NULL,
    response_status  INTEGER,
    response_headers TEXT,
    response_body    BYTEA,
    created_at_ms    BIGINT  NOT NULL,
    -- Tenant first: the table distributes by company on Citus and keeps a tenant's keys together.
    PRIMARY KEY (tenant_id, operation, idempotency_key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at_ms);

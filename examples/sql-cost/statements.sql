-- The statements that examples/sql-cost/run composes into pgbench scripts, one per section.
-- A section starts at a line '-- @ name'. The sections that mirror the protocol (fast-path,
-- begin, claim, record) hold idem's PostgreSQL statement as the code has it, with `$n`
-- placeholders; a line '-- $n: expression' gives the value pgbench sends for each, and the run
-- script substitutes them. A unit test of idem-runtime
-- (backend::postgres::tests::the_sql_cost_statements_are_the_protocols) fails when a mirrored
-- section is no longer the code's statement. The ids vary per transaction as idem's do.

-- @ pick
\set n random(1, 9000000000000000)
-- @ token: the tenant's API token, as AccuBooks' bearer authentication reads it
SELECT company_id FROM api_tokens WHERE token_hash = 'sql-cost-token';
-- @ fast-path: idem's replay fast path (FIND_RECORD), a read of the key's committed record
-- $1: 'sql-cost'
-- $2: 'createCustomer'
-- $3: 'key-' || :client_id::text || '-' || :n::text
SELECT fingerprint, attempt_id, response_status, response_headers, response_body
FROM idempotency_keys
WHERE tenant_id = $1 AND operation = $2 AND idempotency_key = $3 AND expires_at_ms > idem_now_ms();
-- @ begin: idem's BEGIN (postgres_begin): the lock timeout and the tenant, one simple query
BEGIN;
SET LOCAL lock_timeout = 5000;
SET LOCAL idem.tenant_id = E'sql-cost';
-- @ claim: idem's claim of the key (CLAIM)
-- $1: 'sql-cost'
-- $2: 'createCustomer'
-- $3: 'key-' || :client_id::text || '-' || :n::text
-- $4: '\x9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'::bytea
-- $5: 'entity-' || :client_id::text || '-' || :n::text
-- $6: :n
-- $7: 86400000
INSERT INTO idempotency_keys
    (tenant_id, operation, idempotency_key, fingerprint, entity_id, attempt_id, created_at_ms,
     expires_at_ms)
VALUES ($1, $2, $3, $4, $5, $6, idem_now_ms(), idem_now_ms() + $7)
ON CONFLICT (tenant_id, operation, idempotency_key) DO UPDATE SET
    fingerprint = excluded.fingerprint,
    entity_id = excluded.entity_id,
    attempt_id = excluded.attempt_id,
    created_at_ms = excluded.created_at_ms,
    expires_at_ms = excluded.expires_at_ms,
    response_status = NULL,
    response_headers = NULL,
    response_body = NULL
WHERE idempotency_keys.expires_at_ms <= idem_now_ms()
RETURNING attempt_id;
-- @ write: the protected handler's INSERT
INSERT INTO customers (id, company_id, name, email, created_at_ms) VALUES ('entity-' || :client_id::text || '-' || :n::text, 'sql-cost', 'Ada Lovelace', NULL, 1767225600000);
-- @ record: idem's stored response and audit row, one statement (RECORD_WRITE_TOGETHER)
-- $1: 201
-- $2: '[["content-type","application/json"]]'
-- $3: convert_to('{"id":"entity-' || :client_id::text || '-' || :n::text || '","name":"Ada Lovelace","email": null}', 'UTF8')
-- $4: 'sql-cost'
-- $5: 'createCustomer'
-- $6: 'key-' || :client_id::text || '-' || :n::text
-- $7: 'audit-' || :client_id::text || '-' || :n::text
-- $8: 'createCustomer'
-- $9: 'high_risk'
-- $10: 'sql-cost'
-- $11: NULL
-- $12: '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'
-- $13: 'entity-' || :client_id::text || '-' || :n::text
-- $14: encode('\x9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'::bytea, 'hex')
-- $15: 'new'
-- $16: 201
-- $17: NULL
-- $18: 1
-- $19: 2.5
-- $20: NULL
-- $21: 1
-- $22: 0
-- $23: 0
WITH stored AS (
    UPDATE idempotency_keys
    SET response_status = $1, response_headers = $2, response_body = $3
    WHERE tenant_id = $4 AND operation = $5 AND idempotency_key = $6
    RETURNING 1
)
INSERT INTO idempotent_write_audit_log
    (id, operation, class, company_id, user_id, key_hash, entity_id, fingerprint, outcome, status,
     failure, attempts, duration_ms, request_id, repeat_count, created_at_ms, first_seen_at_ms) SELECT $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, idem_now_ms() - $22, idem_now_ms() - $23 FROM stored;
-- @ commit
COMMIT;
-- @ bare-begin: the bare twin's BEGIN
BEGIN;
-- @ bare-write: the bare twin's INSERT
INSERT INTO customers (id, company_id, name, email, created_at_ms) VALUES ('bare-' || :client_id::text || '-' || :n::text, 'sql-cost', 'Ada Lovelace', NULL, 1767225600000);

-- The statements that examples/sql-cost/run composes into pgbench scripts, one per section.
-- A section starts at a line '-- @ name'. The protected write's statements mirror
-- idem-runtime/src/backend.rs (FIND_RECORD, postgres_begin, CLAIM, RECORD_WRITE_TOGETHER)
-- with literals where idem binds values; the ids vary per transaction as idem's do.

-- @ pick
\set n random(1, 9000000000000000)
-- @ token: the tenant's API token, as AccuBooks' bearer authentication reads it
SELECT company_id FROM api_tokens WHERE token_hash = 'sql-cost-token';
-- @ fast-path: idem's replay fast path, a read of the key's committed record
SELECT fingerprint, attempt_id, response_status, response_headers, response_body FROM idempotency_keys WHERE tenant_id = 'sql-cost' AND operation = 'createCustomer' AND idempotency_key = 'key-' || :client_id::text || '-' || :n::text AND created_at_ms > 1767139200000;
-- @ begin: idem's BEGIN with the lock timeout, one simple query
BEGIN;
SET LOCAL lock_timeout = 5000;
-- @ claim: idem's claim of the key
INSERT INTO idempotency_keys (tenant_id, operation, idempotency_key, fingerprint, entity_id, attempt_id, created_at_ms) VALUES ('sql-cost', 'createCustomer', 'key-' || :client_id::text || '-' || :n::text, '\x9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'::bytea, 'entity-' || :client_id::text || '-' || :n::text, :n, 1767225600000) ON CONFLICT (tenant_id, operation, idempotency_key) DO UPDATE SET fingerprint = excluded.fingerprint, entity_id = excluded.entity_id, attempt_id = excluded.attempt_id, created_at_ms = excluded.created_at_ms, response_status = NULL, response_headers = NULL, response_body = NULL WHERE idempotency_keys.created_at_ms <= 1767139200000 RETURNING attempt_id;
-- @ write: the protected handler's INSERT
INSERT INTO customers (id, company_id, name, email, created_at_ms) VALUES ('entity-' || :client_id::text || '-' || :n::text, 'sql-cost', 'Ada Lovelace', NULL, 1767225600000);
-- @ record: idem's stored response and audit row, one statement
WITH stored AS (UPDATE idempotency_keys SET response_status = 201, response_headers = '[["content-type","application/json"]]', response_body = convert_to('{"id":"entity-' || :client_id::text || '-' || :n::text || '","name":"Ada Lovelace","email": null}', 'UTF8') WHERE tenant_id = 'sql-cost' AND operation = 'createCustomer' AND idempotency_key = 'key-' || :client_id::text || '-' || :n::text RETURNING 1) INSERT INTO idempotent_write_audit_log (id, operation, class, company_id, user_id, key_hash, entity_id, fingerprint, outcome, status, failure, attempts, duration_ms, request_id, created_at_ms) SELECT 'audit-' || :client_id::text || '-' || :n::text, 'createCustomer', 'high_risk', 'sql-cost', NULL, '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08', 'entity-' || :client_id::text || '-' || :n::text, encode('\x9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'::bytea, 'hex'), 'new', 201, NULL, 1, 2.5, NULL, 1767225600000 FROM stored;
-- @ commit
COMMIT;
-- @ bare-begin: the bare twin's BEGIN
BEGIN;
-- @ bare-write: the bare twin's INSERT
INSERT INTO customers (id, company_id, name, email, created_at_ms) VALUES ('bare-' || :client_id::text || '-' || :n::text, 'sql-cost', 'Ada Lovelace', NULL, 1767225600000);

-- The bench's bare twin of createCustomer: the tenant's token, then BEGIN, INSERT, COMMIT.
\set n random(1, 9000000000000000)
SELECT company_id FROM api_tokens WHERE token_hash = 'sql-cost-token';
BEGIN;
INSERT INTO customers (id, company_id, name, email, created_at_ms) VALUES ('bare-' || :client_id::text || '-' || :n::text, 'sql-cost', 'Ada Lovelace', NULL, 1767225600000);
COMMIT;

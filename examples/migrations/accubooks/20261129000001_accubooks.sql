-- AccuBooks, one schema for PostgreSQL and SQLite: ids are UUID text, money is BIGINT cents
-- with an ISO 4217 currency, instants are BIGINT Unix milliseconds. The CHECK constraints make
-- a negative total, line, payroll or stock impossible even if a handler forgot to check, and
-- bound every amount by 10^13 cents and every quantity by 10^9 (the API refuses larger ones
-- with a 422 naming the field; see examples/src/accubooks/money.rs).

CREATE TABLE companies (
    id            TEXT   PRIMARY KEY,
    name          TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);


CREATE TABLE company_settings (
    company_id         TEXT   PRIMARY KEY REFERENCES companies (id),
    currency           TEXT   NOT NULL,
    invoice_prefix     TEXT   NOT NULL,
    payment_terms_days BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL
);

CREATE TABLE customers (
    id            TEXT   PRIMARY KEY,
    company_id    TEXT   NOT NULL REFERENCES companies (id),
    name          TEXT   NOT NULL,
    email         TEXT,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE invoices (
    id            TEXT   PRIMARY KEY,
    company_id    TEXT   NOT NULL REFERENCES companies (id),
    customer_id   TEXT   NOT NULL REFERENCES customers (id),
    currency      TEXT   NOT NULL,
    status        TEXT   NOT NULL CHECK (status IN ('draft', 'final', 'paid')),
    total_cents   BIGINT NOT NULL CHECK (total_cents >= 0),
    paid_cents    BIGINT NOT NULL CHECK (paid_cents >= 0 AND paid_cents <= total_cents),
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE invoice_lines (
    id               TEXT   PRIMARY KEY,
    invoice_id       TEXT   NOT NULL REFERENCES invoices (id),
    position         BIGINT NOT NULL,
    description      TEXT   NOT NULL,
    quantity         BIGINT NOT NULL CHECK (quantity > 0 AND quantity <= 1000000000),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0 AND unit_price_cents <= 10000000000000),
    amount_cents     BIGINT NOT NULL CHECK (amount_cents >= 0)
);

CREATE TABLE payments (
    id            TEXT   PRIMARY KEY,
    company_id    TEXT   NOT NULL REFERENCES companies (id),
    invoice_id    TEXT   NOT NULL REFERENCES invoices (id),
    amount_cents  BIGINT NOT NULL CHECK (amount_cents > 0 AND amount_cents <= 10000000000000),
    currency      TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE employees (
    id                   TEXT   PRIMARY KEY,
    company_id           TEXT   NOT NULL REFERENCES companies (id),
    name                 TEXT   NOT NULL,
    monthly_salary_cents BIGINT NOT NULL CHECK (monthly_salary_cents > 0 AND monthly_salary_cents <= 10000000000000),
    currency             TEXT   NOT NULL,
    created_at_ms        BIGINT NOT NULL
);

CREATE TABLE payroll_runs (
    id            TEXT   PRIMARY KEY,
    company_id    TEXT   NOT NULL REFERENCES companies (id),
    period        TEXT   NOT NULL,
    currency      TEXT   NOT NULL,
    total_cents   BIGINT NOT NULL CHECK (total_cents >= 0),
    created_at_ms BIGINT NOT NULL,
    UNIQUE (company_id, period, currency)
);

CREATE TABLE payroll_lines (
    id           TEXT   PRIMARY KEY,
    run_id       TEXT   NOT NULL REFERENCES payroll_runs (id),
    employee_id  TEXT   NOT NULL REFERENCES employees (id),
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0)
);

CREATE TABLE bank_transactions (
    id                TEXT   PRIMARY KEY,
    company_id        TEXT   NOT NULL REFERENCES companies (id),
    amount_cents      BIGINT NOT NULL CHECK (amount_cents <> 0 AND amount_cents BETWEEN -10000000000000 AND 10000000000000),
    currency          TEXT   NOT NULL,
    description       TEXT   NOT NULL,
    status            TEXT   NOT NULL CHECK (status IN ('unreconciled', 'reconciled')),
    reconciled_at_ms  BIGINT,
    created_at_ms     BIGINT NOT NULL
);

CREATE TABLE inventory_items (
    id            TEXT   PRIMARY KEY,
    company_id    TEXT   NOT NULL REFERENCES companies (id),
    sku           TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    quantity      BIGINT NOT NULL CHECK (quantity >= 0 AND quantity <= 1000000000000000),
    created_at_ms BIGINT NOT NULL,
    UNIQUE (company_id, sku)
);

CREATE TABLE inventory_adjustments (
    id            TEXT   PRIMARY KEY,
    company_id    TEXT   NOT NULL REFERENCES companies (id),
    item_id       TEXT   NOT NULL REFERENCES inventory_items (id),
    delta         BIGINT NOT NULL CHECK (delta <> 0 AND delta BETWEEN -1000000000 AND 1000000000),
    reason        TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE users (
    id            TEXT   PRIMARY KEY,
    company_id    TEXT   NOT NULL REFERENCES companies (id),
    email         TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (company_id, email)
);

-- Only a SHA-256 of each token is kept: a leaked table does not leak credentials. A token is
-- issued to one user, whom the audit log records as the author of every write made with it.
CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    company_id TEXT NOT NULL REFERENCES companies (id),
    user_id    TEXT NOT NULL REFERENCES users (id)
);

CREATE TABLE access_grants (
    id            TEXT   PRIMARY KEY,
    company_id    TEXT   NOT NULL REFERENCES companies (id),
    user_id       TEXT   NOT NULL REFERENCES users (id),
    role          TEXT   NOT NULL CHECK (role IN ('viewer', 'accountant', 'admin')),
    created_at_ms BIGINT NOT NULL,
    UNIQUE (user_id, role)
);

-- Requested by triggerWorkflow, or recorded by the writes that start one.
CREATE TABLE workflow_requests (
    id            TEXT   PRIMARY KEY,
    company_id    TEXT   NOT NULL REFERENCES companies (id),
    workflow      TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- One row per workflow the outbox dispatcher ran; its id is the outbox event id, so a
-- redelivered event never runs a workflow twice.
CREATE TABLE workflow_runs (
    event_id      TEXT   PRIMARY KEY,
    company_id    TEXT   NOT NULL,
    workflow      TEXT   NOT NULL,
    subject_id    TEXT   NOT NULL,
    ran_at_ms     BIGINT NOT NULL
);

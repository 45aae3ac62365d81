-- AccuBooks on MySQL and MariaDB (InnoDB): the schema of ../accubooks in MySQL's words. Ids are
-- UUID text, money is BIGINT cents with an ISO 4217 currency, instants are BIGINT Unix
-- milliseconds, the same CHECK constraints bound every amount and quantity (enforced since
-- MySQL 8.0.16 and MariaDB 10.2). Text compares byte for byte (utf8mb4_bin), as on PostgreSQL:
-- `Ann@example.com` and `ann@example.com` are two users. MySQL ignores a REFERENCES clause on a
-- column, so each foreign key is a table constraint. DDL commits implicitly: every statement
-- is idempotent, and a migration that stopped halfway completes when it runs again.

CREATE TABLE IF NOT EXISTS companies (
    id            CHAR(36)     NOT NULL PRIMARY KEY,
    name          TEXT         NOT NULL,
    created_at_ms BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS company_settings (
    company_id         CHAR(36) NOT NULL PRIMARY KEY,
    currency           CHAR(3)  NOT NULL,
    invoice_prefix     TEXT     NOT NULL,
    payment_terms_days BIGINT   NOT NULL,
    updated_at_ms      BIGINT   NOT NULL,
    FOREIGN KEY (company_id) REFERENCES companies (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS customers (
    id            CHAR(36) NOT NULL PRIMARY KEY,
    company_id    CHAR(36) NOT NULL,
    name          TEXT     NOT NULL,
    email         TEXT,
    created_at_ms BIGINT   NOT NULL,
    FOREIGN KEY (company_id) REFERENCES companies (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS invoices (
    id            CHAR(36)    NOT NULL PRIMARY KEY,
    company_id    CHAR(36)    NOT NULL,
    customer_id   CHAR(36)    NOT NULL,
    currency      CHAR(3)     NOT NULL,
    status        VARCHAR(8)  NOT NULL CHECK (status IN ('draft', 'final', 'paid')),
    total_cents   BIGINT      NOT NULL CHECK (total_cents >= 0),
    paid_cents    BIGINT      NOT NULL CHECK (paid_cents >= 0 AND paid_cents <= total_cents),
    created_at_ms BIGINT      NOT NULL,
    FOREIGN KEY (company_id) REFERENCES companies (id),
    FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS invoice_lines (
    id               CHAR(36) NOT NULL PRIMARY KEY,
    invoice_id       CHAR(36) NOT NULL,
    position         BIGINT   NOT NULL,
    description      TEXT     NOT NULL,
    quantity         BIGINT   NOT NULL CHECK (quantity > 0 AND quantity <= 1000000000),
    unit_price_cents BIGINT   NOT NULL CHECK (unit_price_cents >= 0 AND unit_price_cents <= 10000000000000),
    amount_cents     BIGINT   NOT NULL CHECK (amount_cents >= 0),
    FOREIGN KEY (invoice_id) REFERENCES invoices (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS payments (
    id            CHAR(36) NOT NULL PRIMARY KEY,
    company_id    CHAR(36) NOT NULL,
    invoice_id    CHAR(36) NOT NULL,
    amount_cents  BIGINT   NOT NULL CHECK (amount_cents > 0 AND amount_cents <= 10000000000000),
    currency      CHAR(3)  NOT NULL,
    created_at_ms BIGINT   NOT NULL,
    FOREIGN KEY (company_id) REFERENCES companies (id),
    FOREIGN KEY (invoice_id) REFERENCES invoices (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS employees (
    id                   CHAR(36) NOT NULL PRIMARY KEY,
    company_id           CHAR(36) NOT NULL,
    name                 TEXT     NOT NULL,
    monthly_salary_cents BIGINT   NOT NULL CHECK (monthly_salary_cents > 0 AND monthly_salary_cents <= 10000000000000),
    currency             CHAR(3)  NOT NULL,
    created_at_ms        BIGINT   NOT NULL,
    FOREIGN KEY (company_id) REFERENCES companies (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS payroll_runs (
    id            CHAR(36)    NOT NULL PRIMARY KEY,
    company_id    CHAR(36)    NOT NULL,
    period        VARCHAR(7)  NOT NULL,
    currency      CHAR(3)     NOT NULL,
    total_cents   BIGINT      NOT NULL CHECK (total_cents >= 0),
    created_at_ms BIGINT      NOT NULL,
    UNIQUE (company_id, period, currency),
    FOREIGN KEY (company_id) REFERENCES companies (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS payroll_lines (
    id           CHAR(36) NOT NULL PRIMARY KEY,
    run_id       CHAR(36) NOT NULL,
    employee_id  CHAR(36) NOT NULL,
    amount_cents BIGINT   NOT NULL CHECK (amount_cents > 0),
    FOREIGN KEY (run_id) REFERENCES payroll_runs (id),
    FOREIGN KEY (employee_id) REFERENCES employees (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS bank_transactions (
    id                CHAR(36)    NOT NULL PRIMARY KEY,
    company_id        CHAR(36)    NOT NULL,
    amount_cents      BIGINT      NOT NULL CHECK (amount_cents <> 0 AND amount_cents BETWEEN -10000000000000 AND 10000000000000),
    currency          CHAR(3)     NOT NULL,
    description       TEXT        NOT NULL,
    status            VARCHAR(12) NOT NULL CHECK (status IN ('unreconciled', 'reconciled')),
    reconciled_at_ms  BIGINT,
    created_at_ms     BIGINT      NOT NULL,
    FOREIGN KEY (company_id) REFERENCES companies (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A SKU and an email are indexed: at most 255 characters, which the API says with a 422.
CREATE TABLE IF NOT EXISTS inventory_items (
    id            CHAR(36)     NOT NULL PRIMARY KEY,
    company_id    CHAR(36)     NOT NULL,
    sku           VARCHAR(255) NOT NULL,
    name          TEXT         NOT NULL,
    quantity      BIGINT       NOT NULL CHECK (quantity >= 0 AND quantity <= 1000000000000000),
    created_at_ms BIGINT       NOT NULL,
    UNIQUE (company_id, sku),
    FOREIGN KEY (company_id) REFERENCES companies (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS inventory_adjustments (
    id            CHAR(36) NOT NULL PRIMARY KEY,
    company_id    CHAR(36) NOT NULL,
    item_id       CHAR(36) NOT NULL,
    delta         BIGINT   NOT NULL CHECK (delta <> 0 AND delta BETWEEN -1000000000 AND 1000000000),
    reason        TEXT     NOT NULL,
    created_at_ms BIGINT   NOT NULL,
    FOREIGN KEY (company_id) REFERENCES companies (id),
    FOREIGN KEY (item_id) REFERENCES inventory_items (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS users (
    id            CHAR(36)     NOT NULL PRIMARY KEY,
    company_id    CHAR(36)     NOT NULL,
    email         VARCHAR(255) NOT NULL,
    created_at_ms BIGINT       NOT NULL,
    UNIQUE (company_id, email),
    FOREIGN KEY (company_id) REFERENCES companies (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Only a SHA-256 of each token is kept: a leaked table does not leak credentials.
CREATE TABLE IF NOT EXISTS api_tokens (
    token_hash CHAR(64) NOT NULL PRIMARY KEY,
    company_id CHAR(36) NOT NULL,
    user_id    CHAR(36) NOT NULL,
    FOREIGN KEY (company_id) REFERENCES companies (id),
    FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS access_grants (
    id            CHAR(36)    NOT NULL PRIMARY KEY,
    company_id    CHAR(36)    NOT NULL,
    user_id       CHAR(36)    NOT NULL,
    role          VARCHAR(10) NOT NULL CHECK (role IN ('viewer', 'accountant', 'admin')),
    created_at_ms BIGINT      NOT NULL,
    UNIQUE (user_id, role),
    FOREIGN KEY (company_id) REFERENCES companies (id),
    FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS workflow_requests (
    id            CHAR(36)     NOT NULL PRIMARY KEY,
    company_id    CHAR(36)     NOT NULL,
    workflow      VARCHAR(100) NOT NULL,
    created_at_ms BIGINT       NOT NULL,
    FOREIGN KEY (company_id) REFERENCES companies (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per workflow the outbox dispatcher ran; its id is the outbox event id, so a
-- redelivered event never runs a workflow twice.
CREATE TABLE IF NOT EXISTS workflow_runs (
    event_id      CHAR(36)     NOT NULL PRIMARY KEY,
    company_id    CHAR(36)     NOT NULL,
    workflow      VARCHAR(100) NOT NULL,
    subject_id    CHAR(36)     NOT NULL,
    ran_at_ms     BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

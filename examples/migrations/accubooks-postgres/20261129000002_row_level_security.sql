-- Row-level security on PostgreSQL: every business table shows a transaction only the rows of
-- the company in its `idem.tenant_id` setting, which idem sets in every write transaction and in
-- `IdempotencyStore::begin_for`. A handler that forgets its `WHERE company_id = ...` then reads
-- and changes only its own company's rows. FORCE applies the policies to the tables' owner too
-- (AccuBooks serves as the role that migrated); a superuser or a BYPASSRLS role is never
-- subject to them, so serve as neither. Without the setting, `current_setting(..., true)` is
-- NULL or empty, and no row matches: no rows, never all rows.
--
-- api_tokens stays outside: a token is looked up by its hash before the company is known, and
-- the table holds only hashes.

ALTER TABLE companies ENABLE ROW LEVEL SECURITY;
ALTER TABLE companies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON companies
    USING (id = current_setting('idem.tenant_id', true))
    WITH CHECK (id = current_setting('idem.tenant_id', true));

ALTER TABLE company_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE company_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON company_settings
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE customers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON customers
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

ALTER TABLE invoices ENABLE ROW LEVEL SECURITY;
ALTER TABLE invoices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON invoices
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

ALTER TABLE payments ENABLE ROW LEVEL SECURITY;
ALTER TABLE payments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON payments
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

ALTER TABLE employees ENABLE ROW LEVEL SECURITY;
ALTER TABLE employees FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON employees
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

ALTER TABLE payroll_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE payroll_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON payroll_runs
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

ALTER TABLE bank_transactions ENABLE ROW LEVEL SECURITY;
ALTER TABLE bank_transactions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bank_transactions
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

ALTER TABLE inventory_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE inventory_items FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON inventory_items
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

ALTER TABLE inventory_adjustments ENABLE ROW LEVEL SECURITY;
ALTER TABLE inventory_adjustments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON inventory_adjustments
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

ALTER TABLE access_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE access_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON access_grants
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

ALTER TABLE workflow_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflow_requests
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

ALTER TABLE workflow_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflow_runs
    USING (company_id = current_setting('idem.tenant_id', true))
    WITH CHECK (company_id = current_setting('idem.tenant_id', true));

-- invoice_lines has no company of its own: it is visible with its invoice, which the policy of
-- invoices already restricts.
ALTER TABLE invoice_lines ENABLE ROW LEVEL SECURITY;
ALTER TABLE invoice_lines FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON invoice_lines
    USING (EXISTS (SELECT 1 FROM invoices WHERE invoices.id = invoice_lines.invoice_id))
    WITH CHECK (EXISTS (SELECT 1 FROM invoices WHERE invoices.id = invoice_lines.invoice_id));

-- payroll_lines has no company of its own: it is visible with its payroll_run, which the policy of
-- payroll_runs already restricts.
ALTER TABLE payroll_lines ENABLE ROW LEVEL SECURITY;
ALTER TABLE payroll_lines FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON payroll_lines
    USING (EXISTS (SELECT 1 FROM payroll_runs WHERE payroll_runs.id = payroll_lines.run_id))
    WITH CHECK (EXISTS (SELECT 1 FROM payroll_runs WHERE payroll_runs.id = payroll_lines.run_id));

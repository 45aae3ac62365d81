-- MySQL's privileges do the work of PostgreSQL's roles: serve as a user granted SELECT and
-- INSERT on the audit log and nothing else on it (no UPDATE, DELETE, DROP, ALTER or TRIGGER),
-- and run maintenance as the owner. README.md says how. Kept so that the dialects' migrations
-- share their version numbers.
SELECT 1;

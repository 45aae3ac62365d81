-- SQLite has no roles: any connection that can write the file can drop the audit log's
-- triggers. The log is append-only against the protocol and honest code only; CONTRACT.md
-- says so. Kept so that the two dialects' migrations share their version numbers.
SELECT 1;

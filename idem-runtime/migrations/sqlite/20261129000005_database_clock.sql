-- SQLite reads its clock inline (julianday('now')): the database file lives on the
-- application's own host, so the host's clock is the database's. Kept so that the two
-- dialects' migrations share their version numbers.
SELECT 1;

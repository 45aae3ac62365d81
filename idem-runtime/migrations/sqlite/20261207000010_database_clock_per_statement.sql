-- PostgreSQL's clock function reads once per statement from this version on. This database's
-- clock already did (MySQL's CURRENT_TIMESTAMP(3) and SQLite's 'now' are the statement's), so
-- nothing changes here: the version keeps the three databases' migration histories alike.
SELECT 1;

-- PostgreSQL's retention function finds its batch by id from this version on. This database
-- purges with the statements of idem-runtime, which changed with it, so nothing changes here:
-- the version keeps the three databases' migration histories alike.
SELECT 1;

-- MySQL reads its clock inline, in UTC (idem's pools set time_zone = '+00:00'):
-- CAST(UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3)) * 1000 AS SIGNED). Kept so that the dialects'
-- migrations share their version numbers.
SELECT 1;

-- The manufacturing example's own schema; each task family adds its tables in
-- 0001_family_<name>.sql (run in name order by revision 0001).
CREATE SCHEMA IF NOT EXISTS manufacturing;

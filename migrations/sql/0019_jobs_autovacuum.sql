-- A job's fetch walks procrastinate_jobs_priority_idx_v1 (todo jobs) from its front, and every
-- fetched or finished job leaves a dead entry there until VACUUM removes it: with PostgreSQL's
-- default thresholds (50 rows + 20% of the table), a table of a million jobs waits for 200,000
-- dead rows, and fetches slow down meanwhile (bench/RESULTS.md, "A million jobs"). Vacuum the
-- jobs table whenever 5,000 rows have died since the last run, whatever its size, and without
-- the cost-based pauses (the table is hot; a slow vacuum is the problem, not its I/O).
ALTER TABLE procrastinate_jobs SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.02
);

-- The dashboard's failed jobs (the dead letters) are read newest first on this index, so the
-- page costs what the failed jobs cost, whatever the number of succeeded ones. Only failed rows
-- are in it: jobs that succeed never touch it.
CREATE INDEX taskhub_jobs_failed_idx ON procrastinate_jobs (id) WHERE status = 'failed';

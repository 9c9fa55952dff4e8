-- The jobs list (GET /jobs, the dashboard's jobs page, taskhub jobs list) filtered by a rare
-- status or by when jobs were created, so that the page costs the jobs it shows rather than
-- every job newer than them.

-- Cancelled and aborted jobs, newest first, as taskhub_jobs_failed_idx (0014) holds the failed
-- ones: only those rows enter it, so jobs that succeed never touch it.
CREATE INDEX taskhub_jobs_revoked_idx ON procrastinate_jobs (id)
    WHERE status IN ('cancelled', 'aborted');

-- When each job was created (its 'deferred' event, the view's created_at) with its id: a
-- creation window reads the ids of the jobs created in it, index-only. One entry per job,
-- written when it is deferred, at the right edge of the index (times only grow).
CREATE INDEX taskhub_events_deferred_idx ON procrastinate_events (at, job_id)
    WHERE type = 'deferred';

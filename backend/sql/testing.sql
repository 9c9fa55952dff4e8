-- testing_last_event --
-- Where procrastinate's event log stands before backend.testing runs the due jobs.
SELECT coalesce(max(id), 0) AS id FROM procrastinate_events;

-- testing_jobs_started_since --
-- The jobs a run started (once or more), in the order they first started.
SELECT job_id AS id
  FROM procrastinate_events
 WHERE id > %(after)s AND type = 'started'
 GROUP BY job_id
 ORDER BY min(id);

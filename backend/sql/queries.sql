-- taskhub's named queries, in procrastinate's format: "-- name --", a description, the SQL.
-- Routers and tasks never build SQL strings: they call backend.queries.

-- check_database --
-- Proves the database answers and the schema is migrated.
SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS migrated;

-- database_exists --
-- Whether a database of that name exists on the server.
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %(name)s) AS exists;

-- get_job --
-- One job with its timeline (procrastinate's events, oldest first).
SELECT job.id,
       job.task_name,
       job.queue_name,
       job.priority,
       job.lock,
       job.queueing_lock,
       job.args,
       job.status::text AS status,
       job.scheduled_at,
       job.attempts,
       job.abort_requested,
       job.worker_id,
       COALESCE(timeline.events, '[]'::jsonb) AS events
  FROM procrastinate_jobs job
  LEFT JOIN LATERAL (
        SELECT jsonb_agg(jsonb_build_object('type', event.type, 'at', event.at)
                         ORDER BY event.at, event.id) AS events
          FROM procrastinate_events event
         WHERE event.job_id = job.id
       ) timeline ON true
 WHERE job.id = %(job_id)s;

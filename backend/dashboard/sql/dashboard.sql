-- The dashboard's named queries (backend/dashboard/), in the format of backend/sql/queries.sql.

-- dashboard_audit_log --
-- Operators' actions, newest first, one page after the keyset cursor (the primary key).
SELECT id, at, actor, action, job_id, details
  FROM taskhub.audit_log
 WHERE (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
 ORDER BY id DESC
 LIMIT %(limit)s;

-- dashboard_dead_letters --
-- The dead letters, newest first: failed jobs (taskhub_jobs_failed_idx) and jobs waiting to
-- retry after a failed attempt (the active-jobs index), so the cost follows those jobs alone.
SELECT overview.*
  FROM taskhub.job_overview overview
 WHERE overview.id IN (
        SELECT id FROM procrastinate_jobs
         WHERE (status = 'failed' OR (status = 'todo' AND attempts > 0))
           AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
           AND (%(task)s::text IS NULL OR task_name = %(task)s)
           AND (%(queue)s::text IS NULL OR queue_name = %(queue)s)
         ORDER BY id DESC
         LIMIT %(limit)s)
 ORDER BY overview.id DESC;

-- dashboard_retry_failed --
-- Failed jobs (one, or all that match the filter, at most %(limit)s) wait to run again now,
-- as retry_finished_job does one: the 'retried' event is procrastinate's trigger's, progress
-- and result go, each queue's workers are woken once, and each job's retry is audited. Jobs
-- locked by another action are left to it.
WITH target AS (
    SELECT id FROM procrastinate_jobs
     WHERE status = 'failed'
       AND (%(job_id)s::bigint IS NULL OR id = %(job_id)s)
       AND (%(task)s::text IS NULL OR task_name = %(task)s)
       AND (%(queue)s::text IS NULL OR queue_name = %(queue)s)
     ORDER BY id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), retried AS (
    UPDATE procrastinate_jobs job
       SET status = 'todo', scheduled_at = NULL, abort_requested = false
      FROM target
     WHERE job.id = target.id
 RETURNING job.id, job.queue_name
), wake AS (
    SELECT taskhub.wake_workers(NULL, queue_name)
      FROM (SELECT DISTINCT queue_name FROM retried) queues
), progress AS (
    DELETE FROM taskhub.job_progress WHERE job_id IN (SELECT id FROM retried)
), result AS (
    DELETE FROM taskhub.job_results WHERE job_id IN (SELECT id FROM retried)
), audit AS (
    INSERT INTO taskhub.audit_log (actor, action, job_id, details)
    SELECT %(actor)s, 'retry', id, jsonb_build_object('previous_status', 'failed', 'bulk', %(bulk)s)
      FROM retried
)
SELECT (SELECT count(*) FROM retried) AS changed, (SELECT count(*) FROM wake) AS queues;

-- dashboard_cancel_retrying --
-- Jobs waiting to retry after a failed attempt (one, or all that match the filter, at most
-- %(limit)s) are cancelled by procrastinate's own function, each audited.
WITH target AS (
    SELECT id FROM procrastinate_jobs
     WHERE status = 'todo' AND attempts > 0
       AND (%(job_id)s::bigint IS NULL OR id = %(job_id)s)
       AND (%(task)s::text IS NULL OR task_name = %(task)s)
       AND (%(queue)s::text IS NULL OR queue_name = %(queue)s)
     ORDER BY id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), cancelled AS MATERIALIZED (
    SELECT procrastinate_cancel_job_v1(id, true, false) AS id FROM target
), audit AS (
    INSERT INTO taskhub.audit_log (actor, action, job_id, details)
    SELECT %(actor)s, 'cancel', id, jsonb_build_object('previous_status', 'todo', 'bulk', %(bulk)s)
      FROM cancelled WHERE id IS NOT NULL
)
SELECT count(*) AS changed FROM cancelled WHERE id IS NOT NULL;

-- dashboard_live_job --
-- What a job page's live view shows: status, Celery state (as taskhub.job_overview names it),
-- progress and attempts; one row by primary key.
SELECT overview.status, overview.state, overview.attempts, overview.abort_requested,
       overview.progress_done AS done, overview.progress_total AS total,
       overview.progress_message AS message
  FROM taskhub.job_overview overview
 WHERE overview.id = %(job_id)s;

-- finish_jobs_by_function --
-- The worker's finish statement as it was before the set-wise finish (issue 21): every job through
-- procrastinate's own procrastinate_finish_job_v1 / procrastinate_retry_job_v2, one call per job.
-- tests/integration/test_setwise_finish.py holds backend/sql/queries.sql's finish_jobs to it.
-- A batch of finished jobs in one statement (one transaction), each through procrastinate's
-- own finish or retry function, so events and attempts are exactly procrastinate's; with each
-- job's last progress, result and error, and the failure hooks. %(batch)s is a JSON array of
-- entries (backend/runtime/finisher.py builds them). Returns the ids it finished: a job missing
-- from the answer was fenced (see owned). Either the whole batch is stored or none of it.
WITH entry AS (
    SELECT * FROM jsonb_to_recordset(%(batch)s::jsonb) AS entry(
        job_id bigint, outcome text, attempt integer,
        has_progress boolean, done bigint, total bigint, message text, counters jsonb,
        has_result boolean, result jsonb,
        error_type text, error_message text, traceback text,
        retry_at timestamptz, priority integer, queue text, lock text,
        run_failure_hook boolean
    )
), owned AS (
    -- Fencing: only the worker still holding a job may finish it. A worker that was presumed
    -- dead (its job rescued, maybe run elsewhere) finds nothing here. Locks in id order.
    SELECT entry.*, job.queue_name AS job_queue, job.priority AS job_priority
      FROM entry JOIN procrastinate_jobs job ON job.id = entry.job_id
     WHERE job.status = 'doing' AND job.worker_id = %(worker_id)s
     ORDER BY job.id
       FOR UPDATE OF job
), progress AS (
    INSERT INTO taskhub.job_progress AS progress (job_id, done, total, message, counters)
    SELECT job_id, done, total, message, counters
      FROM owned WHERE outcome <> 'retry' AND has_progress
    ON CONFLICT (job_id) DO UPDATE
       SET done = EXCLUDED.done, total = EXCLUDED.total, message = EXCLUDED.message,
           counters = EXCLUDED.counters, updated_at = now()
), progress_cleared AS (
    -- Progress belongs to an attempt: the next one starts from nothing.
    DELETE FROM taskhub.job_progress
     WHERE job_id IN (SELECT job_id FROM owned WHERE outcome = 'retry')
), result AS (
    INSERT INTO taskhub.job_results (job_id, result)
    SELECT job_id, result FROM owned WHERE outcome <> 'retry' AND has_result
    ON CONFLICT (job_id) DO UPDATE SET result = EXCLUDED.result, created_at = now()
), error AS (
    INSERT INTO taskhub.job_errors (job_id, attempt, type, message, traceback)
    SELECT job_id, attempt, error_type, error_message, traceback
      FROM owned WHERE error_type IS NOT NULL
), hook AS (
    -- A final failure of a task with an on_failure hook: its hook job, deferred once, here,
    -- with the finish, on the failed job's queue (whose workers know the task).
    SELECT owned.job_id AS failed_job_id, owned.error_type,
           procrastinate_defer_jobs_v1(ARRAY[ROW(
               owned.job_queue, 'taskhub.on_failure', owned.job_priority, NULL, NULL,
               jsonb_build_object('job_id', owned.job_id), NULL
           )::procrastinate_job_to_defer_v1])::bigint[] AS hook_ids
      FROM owned
     WHERE owned.outcome = 'failed' AND owned.run_failure_hook
), final_failure AS (
    INSERT INTO taskhub.audit_log (actor, action, job_id, details)
    SELECT 'worker:' || %(worker_id)s::text, 'final_failure', failed_job_id,
           jsonb_build_object('error', error_type, 'hook_job_id', hook_ids[1])
      FROM hook
)
SELECT job_id,
       CASE WHEN outcome = 'retry'
            THEN procrastinate_retry_job_v2(job_id, retry_at, priority, queue, lock)
            ELSE procrastinate_finish_job_v1(job_id, outcome::procrastinate_job_status, false)
       END AS done
  FROM owned;


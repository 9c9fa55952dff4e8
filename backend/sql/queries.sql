-- taskhub's named queries, in procrastinate's format: "-- name --", a description, the SQL.
-- Routers and tasks never build SQL strings: they call backend.queries.

-- check_database --
-- Proves the database answers and the schema is migrated.
SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS migrated;

-- database_exists --
-- Whether a database of that name exists on the server.
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %(name)s) AS exists;

-- get_job --
-- One job from taskhub.job_overview, with its event timeline and every error.
SELECT overview.*,
       COALESCE(timeline.events, '[]'::jsonb) AS events,
       COALESCE(failures.errors, '[]'::jsonb) AS errors
  FROM taskhub.job_overview overview
  LEFT JOIN LATERAL (
        SELECT jsonb_agg(jsonb_build_object('type', event.type, 'at', event.at)
                         ORDER BY event.at, event.id) AS events
          FROM procrastinate_events event
         WHERE event.job_id = overview.id
       ) timeline ON true
  LEFT JOIN LATERAL (
        SELECT jsonb_agg(jsonb_build_object(
                   'attempt', error.attempt, 'type', error.type, 'message', error.message,
                   'traceback', error.traceback, 'at', error.created_at
               ) ORDER BY error.id) AS errors
          FROM taskhub.job_errors error
         WHERE error.job_id = overview.id
       ) failures ON true
 WHERE overview.id = %(job_id)s;

-- list_jobs --
-- Jobs newest first, filtered, one page after the cursor (keyset: stable under inserts).
-- The filters on the job's own columns are on procrastinate_jobs itself, so a status filter
-- meets its partial index (failed: taskhub_jobs_failed_idx, cancelled or aborted:
-- taskhub_jobs_revoked_idx, waiting or running: procrastinate's), and only the jobs that pass
-- them are looked up in the overview (OFFSET 0: a lookup per job, never a second walk of the
-- jobs from the newest). A creation window bounds the walk by the least and greatest id of the
-- jobs created in it (their 'deferred' events, index-only on taskhub_events_deferred_idx), so
-- it starts at the window, not at the newest job; FILTER (WHERE true) keeps min()/max() off
-- their shortcut, which would walk every newer job's events. The overview's filters stay, as
-- the definition.
SELECT overview.*
  FROM procrastinate_jobs job
 CROSS JOIN LATERAL (
       SELECT * FROM taskhub.job_overview WHERE job_overview.id = job.id OFFSET 0
       ) overview
 WHERE (%(before_id)s::bigint IS NULL OR job.id < %(before_id)s)
   AND (%(statuses)s::procrastinate_job_status[] IS NULL
        OR job.status = ANY(%(statuses)s::procrastinate_job_status[]))
   AND (%(task)s::text IS NULL OR job.task_name = %(task)s)
   AND (%(queue)s::text IS NULL OR job.queue_name = %(queue)s)
   AND (%(created_after)s::timestamptz IS NULL OR job.id >= (
        SELECT min(event.job_id) FILTER (WHERE true) FROM procrastinate_events event
         WHERE event.type = 'deferred' AND event.at >= %(created_after)s
           AND event.at < coalesce(%(created_before)s::timestamptz, 'infinity')))
   AND (%(created_before)s::timestamptz IS NULL OR job.id <= (
        SELECT max(event.job_id) FILTER (WHERE true) FROM procrastinate_events event
         WHERE event.type = 'deferred' AND event.at < %(created_before)s
           AND event.at >= coalesce(%(created_after)s::timestamptz, '-infinity')))
   AND (%(states)s::text[] IS NULL OR overview.state = ANY(%(states)s))
   AND (%(created_after)s::timestamptz IS NULL OR overview.created_at >= %(created_after)s)
   AND (%(created_before)s::timestamptz IS NULL OR overview.created_at < %(created_before)s)
   AND (%(finished_after)s::timestamptz IS NULL OR overview.finished_at >= %(finished_after)s)
   AND (%(finished_before)s::timestamptz IS NULL OR overview.finished_at < %(finished_before)s)
 ORDER BY job.id DESC
 LIMIT %(limit)s;

-- lock_job --
-- The job's status, locked until the end of the transaction (control actions).
SELECT id, status::text AS status FROM procrastinate_jobs WHERE id = %(job_id)s FOR UPDATE;

-- cancel_job --
-- A waiting job becomes cancelled; a running one gets an abort request (procrastinate's rules).
SELECT procrastinate_cancel_job_v1(%(job_id)s, true, false) AS id;

-- retry_finished_job --
-- A failed, cancelled or aborted job waits to run again, now. Its events, errors and attempt
-- count stay; its progress and result go (they belong to the new run). procrastinate's
-- trigger records 'retried' only for failed jobs, so the others get theirs here.
WITH target AS (
    SELECT id, status FROM procrastinate_jobs
     WHERE id = %(job_id)s AND status IN ('failed', 'cancelled', 'aborted')
     FOR UPDATE
), retried AS (
    UPDATE procrastinate_jobs job
       SET status = 'todo', scheduled_at = NULL, abort_requested = false
      FROM target
     WHERE job.id = target.id
 RETURNING job.id, job.queue_name, target.status AS previous_status
), wake AS (
    -- procrastinate only notifies on INSERT; wake the workers as a new job would.
    SELECT taskhub.wake_workers(id, queue_name) FROM retried
), event AS (
    INSERT INTO procrastinate_events (job_id, type)
    SELECT id, 'retried' FROM retried WHERE previous_status <> 'failed'
), progress AS (
    DELETE FROM taskhub.job_progress WHERE job_id IN (SELECT id FROM retried)
), result AS (
    DELETE FROM taskhub.job_results WHERE job_id IN (SELECT id FROM retried)
)
SELECT previous_status::text, (SELECT count(*) FROM wake) AS woken FROM retried;

-- record_audit --
-- Who did what to which job; written in the transaction of the action itself.
INSERT INTO taskhub.audit_log (actor, action, job_id, details)
VALUES (%(actor)s, %(action)s, %(job_id)s, %(details)s);

-- lock_idempotency_key --
-- Serialises requests that share an Idempotency-Key until the first one commits.
SELECT pg_advisory_xact_lock(hashtextextended(%(actor)s || '/' || %(key)s, 0));

-- find_idempotency_key --
-- The job a key created less than a day ago.
SELECT job_id, request_hash FROM taskhub.idempotency_keys
 WHERE actor = %(actor)s AND key = %(key)s AND created_at > now() - interval '24 hours';

-- save_idempotency_key --
INSERT INTO taskhub.idempotency_keys (actor, key, request_hash, job_id)
VALUES (%(actor)s, %(key)s, %(request_hash)s, %(job_id)s)
ON CONFLICT (actor, key) DO UPDATE
   SET request_hash = EXCLUDED.request_hash, job_id = EXCLUDED.job_id, created_at = now();

-- write_progress --
-- A running task's latest progress report (throttled by the worker). Someone watching the job
-- (a dashboard's job page registers in taskhub.job_waiters) is told at commit; no one else is.
WITH written AS (
    INSERT INTO taskhub.job_progress AS progress
           (job_id, done, total, message, counters, updated_at)
    VALUES (%(job_id)s, %(done)s, %(total)s, %(message)s, %(counters)s::jsonb, now())
    ON CONFLICT (job_id) DO UPDATE
       SET done = EXCLUDED.done, total = EXCLUDED.total, message = EXCLUDED.message,
           counters = EXCLUDED.counters, updated_at = now()
    RETURNING job_id
)
SELECT pg_notify('taskhub_job_progress', written.job_id::text)
  FROM written
 WHERE EXISTS (SELECT 1 FROM taskhub.job_waiters waiter WHERE waiter.job_id = written.job_id);

-- finish_jobs --
-- A batch of finished jobs in one statement (one transaction), with each job's last progress,
-- result and error, and the failure hooks. %(batch)s is a JSON array of entries
-- (backend/runtime/finisher.py builds them). Returns the ids it finished: a job missing from
-- the answer was fenced (see owned). Either the whole batch is stored or none of it.
-- Set-wise: two UPDATEs (finished, retried) do for the whole batch what procrastinate's
-- procrastinate_finish_job_v1 and procrastinate_retry_job_v2 do one call per job, with the same
-- SET lists, so the same triggers fire (events, taskhub's own) on the same rows: half the
-- server's time per job. tests/integration/test_setwise_finish.py compares both ways row by row
-- and NOTIFY by NOTIFY (the per-call way: tests/integration/finish_reference/reference.sql).
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
), finished AS (
    -- procrastinate_finish_job_v1(id, outcome, delete_job => false) on a job in 'doing'.
    UPDATE procrastinate_jobs job
       SET status = owned.outcome::procrastinate_job_status,
           abort_requested = false,
           attempts = job.attempts + 1
      FROM owned
     WHERE job.id = owned.job_id AND owned.outcome <> 'retry'
 RETURNING job.id
), retried AS (
    -- procrastinate_retry_job_v2 on a job in 'doing': back to 'todo', due at retry_at, or
    -- 'failed' (nothing else changed) when an abort was asked for meanwhile. abort_requested
    -- stays out of the SET list, as in the function: its UPDATE OF triggers must not run.
    UPDATE procrastinate_jobs job
       SET status = CASE WHEN job.abort_requested THEN 'failed' ELSE 'todo'
                    END::procrastinate_job_status,
           attempts = CASE WHEN job.abort_requested THEN job.attempts ELSE job.attempts + 1 END,
           scheduled_at = CASE WHEN job.abort_requested THEN job.scheduled_at
                               ELSE owned.retry_at END,
           priority = CASE WHEN job.abort_requested THEN job.priority
                           ELSE COALESCE(owned.priority, job.priority) END,
           queue_name = CASE WHEN job.abort_requested THEN job.queue_name
                             ELSE COALESCE(owned.queue, job.queue_name) END,
           lock = CASE WHEN job.abort_requested THEN job.lock ELSE COALESCE(owned.lock, job.lock) END
      FROM owned
     WHERE job.id = owned.job_id AND owned.outcome = 'retry'
 RETURNING job.id
)
SELECT id AS job_id FROM finished
UNION ALL
SELECT id AS job_id FROM retried;

-- notify_finished_waiters --
-- After a finish batch has committed, on the worker's finish connection (where the row trigger
-- stays quiet: migration 0009): wake whoever waits for these jobs, once per job, as the
-- trigger would. A waiter registered before the commit is seen here; one that registers after
-- it reads the final status itself (watch_job).
SELECT count(pg_notify('taskhub_job_finished', waited.job_id::text)) AS notified
  FROM (SELECT DISTINCT job_id FROM taskhub.job_waiters
         WHERE job_id = ANY(%(job_ids)s::bigint[])) AS waited;

-- watch_job --
-- Register a waiter and share-lock the job row: a finish in progress completes first, a later
-- one sees the waiter and NOTIFYs (taskhub.notify_job_finished). Commit before waiting.
WITH waiter AS (
    INSERT INTO taskhub.job_waiters (job_id, waiter) VALUES (%(job_id)s, %(waiter)s)
    ON CONFLICT DO NOTHING
)
SELECT status FROM procrastinate_jobs WHERE id = %(job_id)s FOR SHARE;

-- unwatch_job --
DELETE FROM taskhub.job_waiters WHERE job_id = %(job_id)s AND waiter = %(waiter)s;

-- requeue_jobs --
-- Jobs a shutting-down worker interrupted, or fetched and never started, wait again, due now,
-- their attempt not counted (procrastinate records 'deferred_for_retry'); the other workers
-- are woken for them. Fenced like finish_jobs.
WITH requeued AS (
    UPDATE procrastinate_jobs
       SET status = 'todo', abort_requested = false, scheduled_at = NULL
     WHERE id = ANY(%(job_ids)s::bigint[]) AND status = 'doing' AND worker_id = %(worker_id)s
 RETURNING id, queue_name
), progress AS (
    DELETE FROM taskhub.job_progress WHERE job_id IN (SELECT id FROM requeued)
)
SELECT id, taskhub.wake_workers(id, queue_name) AS woken FROM requeued;

-- rescue_stalled_jobs --
-- Jobs running on a worker that stopped heart-beating (or whose worker row is gone) wait
-- again, due now, the lost attempt counted and recorded as a WorkerLost error; the workers
-- are woken. SKIP LOCKED: a job its worker is finishing right now is left to it. Two kinds end
-- instead, failed, as a final failure (with its on_failure hook when its task is one of
-- %(hooked_tasks)s):
-- - poison: lost with its worker %(lost_limit)s times, it takes down every worker that runs it
--   (out of memory, a crash in native code);
-- - superseded: another job with its queueing lock waits already (the next tick of a periodic
--   task), or a newer one is rescued with it. Put back to wait, it broke the queueing lock's
--   unique index and the whole rescue failed, every time, for every stalled job.
WITH locked AS (
    SELECT job.id, job.queue_name, job.task_name, job.priority, job.attempts, job.worker_id,
           job.queueing_lock,
           (SELECT count(*) FROM taskhub.job_errors lost
             WHERE lost.job_id = job.id AND lost.type = 'WorkerLost') + 1
               >= %(lost_limit)s AS poison
      FROM procrastinate_jobs job
      LEFT JOIN procrastinate_workers worker ON worker.id = job.worker_id
     WHERE job.status = 'doing'
       AND (worker.id IS NULL
            OR worker.last_heartbeat < now() - make_interval(secs => %(seconds)s))
       FOR UPDATE OF job SKIP LOCKED
), stalled AS (
    SELECT locked.*,
           locked.queueing_lock IS NOT NULL
           AND (row_number() OVER (PARTITION BY locked.queueing_lock ORDER BY locked.id DESC) > 1
                OR EXISTS (SELECT FROM procrastinate_jobs waiting
                            WHERE waiting.queueing_lock = locked.queueing_lock
                              AND waiting.status = 'todo')) AS superseded
      FROM locked
), error AS (
    INSERT INTO taskhub.job_errors (job_id, attempt, type, message)
    SELECT id, attempts + 1, 'WorkerLost',
           'worker ' || coalesce(worker_id::text, '(gone)') || ' stopped heart-beating'
           || CASE WHEN poison
                   THEN '; lost with its worker ' || %(lost_limit)s::text
                        || ' times, the job is not run again'
                   WHEN superseded
                   THEN '; a job with its queueing lock waits already, this one is not run again'
                   ELSE '' END
      FROM stalled
), progress AS (
    DELETE FROM taskhub.job_progress WHERE job_id IN (SELECT id FROM stalled)
), hook AS (
    SELECT stalled.id AS failed_job_id,
           procrastinate_defer_jobs_v1(ARRAY[ROW(
               stalled.queue_name, 'taskhub.on_failure', stalled.priority, NULL, NULL,
               jsonb_build_object('job_id', stalled.id), NULL
           )::procrastinate_job_to_defer_v1])::bigint[] AS hook_ids
      FROM stalled
     WHERE (stalled.poison OR stalled.superseded)
       AND stalled.task_name = ANY(%(hooked_tasks)s::text[])
), final_failure AS (
    INSERT INTO taskhub.audit_log (actor, action, job_id, details)
    SELECT 'rescue', 'final_failure', stalled.id,
           jsonb_build_object('error', 'WorkerLost', 'hook_job_id', hook.hook_ids[1])
      FROM stalled LEFT JOIN hook ON hook.failed_job_id = stalled.id
     WHERE stalled.poison OR stalled.superseded
)
SELECT id, poison, superseded AND NOT poison AS superseded,
       CASE WHEN poison OR superseded THEN procrastinate_finish_job_v1(id, 'failed', false)
            ELSE procrastinate_retry_job_v2(id, now(), NULL, NULL, NULL)
       END AS done,
       taskhub.wake_workers(id, queue_name) AS woken
  FROM stalled;

-- defer_job --
-- One job, in one statement on the caller's connection and transaction: the INSERT of
-- procrastinate_defer_jobs_v1 without the function around it. procrastinate's triggers still
-- record the 'deferred' event and NOTIFY the workers (at the caller's commit).
INSERT INTO procrastinate_jobs
       (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
VALUES (%(queue)s, %(task)s, %(priority)s, %(lock)s, %(queueing_lock)s, %(args)s::jsonb,
        %(scheduled_at)s)
RETURNING id;

-- defer_jobs --
-- Many jobs in one statement, as defer_job; ids come back in the order of the arrays. The
-- arguments travel as one JSON array (one document to encode, not a jsonb[] of many).
INSERT INTO procrastinate_jobs
       (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
SELECT job.queue, job.task, job.priority, job.lock, job.queueing_lock, args.value,
       job.scheduled_at
  FROM unnest(%(queues)s::varchar[], %(tasks)s::varchar[], %(priorities)s::integer[],
              %(locks)s::varchar[], %(queueing_locks)s::varchar[],
              %(scheduled_ats)s::timestamptz[])
       WITH ORDINALITY AS job(queue, task, priority, lock, queueing_lock, scheduled_at, n)
  JOIN jsonb_array_elements(%(args)s::jsonb) WITH ORDINALITY AS args(value, n) USING (n)
 ORDER BY n
RETURNING id;

-- fetch_job --
-- One job, procrastinate's fetch_job query through taskhub.fetch_job (skips paused queues).
SELECT id, status, task_name, priority, lock, queueing_lock, args, scheduled_at, queue_name,
       attempts, worker_id
  FROM taskhub.fetch_job(%(queues)s::varchar[], %(worker_id)s);

-- fetch_jobs --
-- Up to %(count)s jobs in one statement, by procrastinate's rules (procrastinate_fetch_job_v2,
-- copied as taskhub.fetch_job in migration 0003): todo to doing with the worker id, SKIP
-- LOCKED, due jobs only, the queue filter, paused queues skipped, priority then id, and one
-- job per lock (none of its lock running, none ahead of it waiting). The lock test reads
-- "lock is null or not exists": written as procrastinate writes it, a multi-row fetch scans
-- and sorts every queued job; this way the plan walks procrastinate_jobs_priority_idx_v1 and
-- stops after %(count)s. The rows come back unordered: the caller sorts them.
UPDATE procrastinate_jobs
   SET status = 'doing', worker_id = %(worker_id)s
 WHERE id = ANY(ARRAY(
        SELECT jobs.id
          FROM procrastinate_jobs AS jobs
         WHERE jobs.status = 'todo'
           AND (%(queues)s::varchar[] IS NULL OR jobs.queue_name = ANY(%(queues)s::varchar[]))
           AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
           AND NOT EXISTS (
                SELECT 1 FROM taskhub.paused_queues paused
                 WHERE paused.queue_name = jobs.queue_name
           )
           AND (jobs.lock IS NULL OR NOT EXISTS (
                SELECT 1
                  FROM procrastinate_jobs AS other_jobs
                 WHERE other_jobs.lock = jobs.lock
                   AND (other_jobs.status = 'doing'
                        OR (other_jobs.status = 'todo'
                            AND (other_jobs.priority > jobs.priority
                                 OR (other_jobs.priority = jobs.priority
                                     AND other_jobs.id < jobs.id))))
           ))
         ORDER BY jobs.priority DESC, jobs.id ASC
         LIMIT %(count)s
           FOR UPDATE OF jobs SKIP LOCKED
 ))
RETURNING id, status, task_name, priority, lock, queueing_lock, args, scheduled_at, queue_name,
          attempts, worker_id;

-- list_queues --
-- Every queue that has waiting or running jobs, or is paused (or just the one named): jobs
-- waiting and running, the oldest waiting job's age. Finished jobs are not read: the scan walks
-- the partial index of waiting and running jobs (taskhub_jobs_active_queue_idx), so its cost
-- follows the jobs in flight, not the table.
WITH counts AS (
    SELECT queue_name,
           count(*) FILTER (WHERE status = 'todo') AS todo,
           count(*) FILTER (WHERE status = 'doing') AS doing,
           min(id) FILTER (WHERE status = 'todo') AS oldest_todo
      FROM procrastinate_jobs
     WHERE status IN ('todo', 'doing')
       AND (%(queue)s::text IS NULL OR queue_name = %(queue)s)
     GROUP BY queue_name
)
SELECT coalesce(counts.queue_name, paused.queue_name) AS name,
       coalesce(counts.todo, 0) AS todo,
       coalesce(counts.doing, 0) AS doing,
       (SELECT min(event.at) FROM procrastinate_events event
         WHERE event.job_id = counts.oldest_todo AND event.type = 'deferred') AS oldest_todo_at,
       paused.queue_name IS NOT NULL AS paused,
       paused.paused_at,
       paused.paused_by
  FROM counts
  FULL JOIN (SELECT * FROM taskhub.paused_queues
              WHERE %(queue)s::text IS NULL OR queue_name = %(queue)s) paused
    ON paused.queue_name = counts.queue_name
 ORDER BY name;

-- pause_queue --
INSERT INTO taskhub.paused_queues (queue_name, paused_by) VALUES (%(queue)s, %(actor)s)
ON CONFLICT (queue_name) DO NOTHING
RETURNING queue_name;

-- resume_queue --
-- Unpause, and wake the workers of that queue: its jobs are due.
WITH resumed AS (
    DELETE FROM taskhub.paused_queues WHERE queue_name = %(queue)s RETURNING queue_name
)
SELECT queue_name, taskhub.wake_workers(NULL, queue_name) AS woken FROM resumed;

-- record_queue_audit --
INSERT INTO taskhub.audit_log (actor, action, details)
VALUES (%(actor)s, %(action)s, jsonb_build_object('queue', %(queue)s::text));

-- take_rate_limit --
-- NULL when this run is admitted under the limit, else when the next run may start.
SELECT taskhub.take_rate_limit(%(key)s, %(max_runs)s, %(seconds)s) AS next_at;

-- postpone_job --
-- A rate-limited job waits until a run is free again: todo, due then, its attempt not counted,
-- no error (procrastinate records 'deferred_for_retry'). Fenced like finish_job.
UPDATE procrastinate_jobs
   SET status = 'todo', scheduled_at = %(retry_at)s
 WHERE id = %(job_id)s AND status = 'doing' AND worker_id = %(worker_id)s
RETURNING id;

-- last_schedule_runs --
-- The latest tick each schedule deferred (procrastinate keeps only that one), with its job.
SELECT DISTINCT ON (defers.task_name)
       defers.task_name, defers.defer_timestamp, defers.job_id, job.status,
       job.started_at, job.finished_at
  FROM procrastinate_periodic_defers defers
  LEFT JOIN taskhub.job_overview job ON job.id = defers.job_id
 WHERE defers.task_name = ANY(%(tasks)s::varchar[]) AND defers.periodic_id = defers.task_name
 ORDER BY defers.task_name, defers.defer_timestamp DESC;

-- defer_periodic_job --
-- procrastinate's defer_periodic_job query through taskhub.defer_periodic_job (migration 0016):
-- a tick at or before the schedule's newest recorded one is not deferred again.
SELECT taskhub.defer_periodic_job(%(queue)s, %(lock)s, %(queueing_lock)s, %(task_name)s,
                                  %(priority)s, %(periodic_id)s, %(defer_timestamp)s,
                                  %(args)s) AS id;

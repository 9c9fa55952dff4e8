-- The maintenance jobs' named queries (backend/tasks/maintenance.py), in the format of
-- queries.sql. Pruning deletes in batches, each its own short transaction; see docs/pruning.md.

-- prune_cutoffs --
-- One run's cutoffs, fixed at its start: jobs that finished before them are deleted.
SELECT now() - make_interval(secs => %(succeeded_age_seconds)s) AS succeeded_cutoff,
       now() - make_interval(secs => %(failed_age_seconds)s) AS failed_cutoff;

-- prune_batch_settings --
-- For the batch's transaction: give up rather than queue behind a lock (SKIP LOCKED already
-- passes over locked jobs; this covers the rows a delete cascades to).
SELECT set_config('lock_timeout', %(lock_timeout)s, true);

-- prune_jobs --
-- One batch: the next finishes of one event type older than the cutoff, oldest first after the
-- keyset cursor (at, id), walked on taskhub_events_finished_idx. Their jobs are deleted (events,
-- progress, result, errors and idempotency keys cascade; the audit log stays) when the job is
-- finished and its latest finish, whatever its type, is older than its status's cutoff: a job
-- that failed long ago, was retried and succeeded yesterday stays. Jobs locked by anyone, and
-- the latest run of a schedule (procrastinate_periodic_defers), are skipped. Returns the cursor
-- for the next batch and the deleted jobs per status.
WITH scanned AS (
    SELECT event.id, event.at, event.job_id
      FROM procrastinate_events event
     WHERE event.type IN ('succeeded', 'failed', 'cancelled', 'aborted')
       AND event.type = %(event_type)s::procrastinate_job_event_type
       AND event.at < %(cutoff)s::timestamptz
       AND (event.at, event.id) > (%(after_at)s::timestamptz, %(after_id)s::bigint)
     ORDER BY event.at, event.id
     LIMIT %(batch)s
), last_scanned AS (
    SELECT at, id FROM scanned ORDER BY at DESC, id DESC LIMIT 1
), candidate AS (
    SELECT job.id
      FROM procrastinate_jobs job
     WHERE job.id IN (SELECT job_id FROM scanned)
       AND job.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
       AND (SELECT max(finish.at)
              FROM procrastinate_events finish
             WHERE finish.job_id = job.id
               AND finish.type IN ('succeeded', 'failed', 'cancelled', 'aborted'))
           < CASE WHEN job.status = 'failed' THEN %(failed_cutoff)s::timestamptz
                  ELSE %(succeeded_cutoff)s::timestamptz END
       AND NOT EXISTS (SELECT 1 FROM procrastinate_periodic_defers defer
                        WHERE defer.job_id = job.id)
       FOR UPDATE OF job SKIP LOCKED
), gone AS (
    DELETE FROM procrastinate_jobs job
     USING candidate
     WHERE job.id = candidate.id
 RETURNING job.status
)
SELECT (SELECT count(*) FROM scanned) AS scanned,
       (SELECT at FROM last_scanned) AS last_at,
       (SELECT id FROM last_scanned) AS last_id,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE status = 'aborted') AS aborted
  FROM gone;

-- prune_idempotency_keys --
-- Keys older than a day no longer protect anything, one batch.
WITH gone AS (
    DELETE FROM taskhub.idempotency_keys
     WHERE (actor, key) IN (SELECT actor, key FROM taskhub.idempotency_keys
                             WHERE created_at < now() - interval '24 hours'
                             LIMIT %(batch)s)
 RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- prune_waiters --
-- Waiters left by a process that died while waiting (a wait lasts a minute at most).
WITH gone AS (
    DELETE FROM taskhub.job_waiters WHERE since < now() - interval '1 hour' RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

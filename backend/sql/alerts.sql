-- Alert events (taskhub.alert_events): named queries of backend/alerts.py.

-- insert_alert_event --
-- One alert, in the caller's transaction: it commits with what it reports.
INSERT INTO taskhub.alert_events (kind, severity, message, details, job_id)
VALUES (%(kind)s, %(severity)s, %(message)s, %(details)s, %(job_id)s)
RETURNING *;

-- list_alert_events --
-- Recent alerts, newest first, optionally of one kind.
SELECT * FROM taskhub.alert_events
 WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)
 ORDER BY raised_at DESC, id DESC
 LIMIT %(limit)s;

-- get_alert_event --
-- One alert event, for its webhook delivery.
SELECT * FROM taskhub.alert_events WHERE id = %(id)s;

-- alert_evaluation_lock --
-- One evaluator at a time, until its transaction ends: the next one sees the states it wrote,
-- so a transition is notified once however many workers evaluate.
SELECT pg_advisory_xact_lock(hashtext('taskhub.evaluate_alerts'));

-- alert_conditions --
-- Every rule's condition that holds now, one row per rule and subject. A threshold of 0 turns
-- its rule off. Finishes are read from the window's events only (index on type, at, id).
WITH due AS (
    SELECT job.id, job.queue_name, job.scheduled_at
      FROM procrastinate_jobs job
     WHERE job.status = 'todo' AND (job.scheduled_at IS NULL OR job.scheduled_at <= now())
), backlog AS (
    SELECT queue_name, count(*) AS waiting, min(id) AS oldest_id
      FROM due GROUP BY queue_name
), oldest AS (
    SELECT backlog.queue_name, backlog.waiting,
           extract(epoch FROM now() - coalesce(job.scheduled_at, deferred.at)) AS age
      FROM backlog
      JOIN procrastinate_jobs job ON job.id = backlog.oldest_id
      LEFT JOIN LATERAL (
            SELECT min(event.at) AS at FROM procrastinate_events event
             WHERE event.job_id = job.id AND event.type = 'deferred'
      ) deferred ON true
), finishes AS (
    -- One range scan of taskhub_events_finished_idx (type, at, id) per type: a filter on the
    -- four types alone is the index's predicate, so the planner drops it from the index
    -- condition and walks every finish ever kept for `at` (0.3 s on 10 million jobs).
    SELECT job.task_name, job.queue_name, job.id AS job_id, event.type::text AS type
      FROM unnest('{succeeded,failed,cancelled,aborted}'::procrastinate_job_event_type[])
           AS finish(type)
      JOIN procrastinate_events event ON event.type = finish.type
      JOIN procrastinate_jobs job ON job.id = event.job_id
     WHERE event.type IN ('succeeded', 'failed', 'cancelled', 'aborted')
       AND event.at > now() - make_interval(secs => %(window)s)
), live_workers AS (
    SELECT count(*) AS n FROM procrastinate_workers
     WHERE last_heartbeat >= now() - make_interval(secs => %(rescue_after)s)
), last_backup AS (
    SELECT id, status, error, started_at FROM taskhub.backups
     WHERE status <> 'running' ORDER BY started_at DESC LIMIT 1
), last_good_backup AS (
    SELECT max(finished_at) AS at FROM taskhub.backups WHERE status = 'succeeded'
)
SELECT 'backlog' AS rule, queue_name AS subject, 'warning' AS severity,
       format('queue %%s has %%s waiting jobs (threshold %%s)', queue_name, waiting,
              %(backlog)s::int) AS message,
       jsonb_build_object('queue', queue_name, 'waiting', waiting,
                          'threshold', %(backlog)s::int) AS details
  FROM backlog WHERE %(backlog)s::int > 0 AND waiting > %(backlog)s::int
UNION ALL
SELECT 'oldest_job_age', queue_name, 'warning',
       format('queue %%s: its oldest waiting job has waited %%s s (threshold %%s s)',
              queue_name, round(age::numeric), %(oldest_age)s::float8),
       jsonb_build_object('queue', queue_name, 'age_seconds', round(age::numeric, 1),
                          'waiting', waiting, 'threshold', %(oldest_age)s::float8)
  FROM oldest WHERE %(oldest_age)s::float8 > 0 AND age > %(oldest_age)s::float8
UNION ALL
SELECT 'failure_rate', task_name, 'error',
       format('task %%s: %%s of %%s jobs failed in the last %%s s', task_name, failed,
              finished, %(window)s::float8),
       jsonb_build_object('task', task_name, 'failed', failed, 'finished', finished,
                          'rate', round(failed::numeric / finished, 3),
                          'threshold', %(failure_rate)s::float8,
                          'window_seconds', %(window)s::float8)
  FROM (SELECT task_name, count(*) AS finished, count(*) FILTER (WHERE type = 'failed') AS failed
          FROM finishes GROUP BY task_name) per_task
 WHERE %(failure_rate)s::float8 > 0 AND finished >= %(failure_min_jobs)s::int
   AND failed::float8 / finished > %(failure_rate)s::float8
UNION ALL
SELECT 'critical_failure', queue_name, 'critical',
       format('critical queue %%s: %%s jobs failed for good in the last %%s s (last: job %%s)',
              queue_name, count(*), %(window)s::float8, max(job_id)),
       jsonb_build_object('queue', queue_name, 'failed', count(*),
                          'job_ids', jsonb_agg(job_id ORDER BY job_id DESC),
                          'window_seconds', %(window)s::float8)
  FROM finishes
 WHERE type = 'failed' AND queue_name = ANY(%(critical_queues)s::text[])
 GROUP BY queue_name
UNION ALL
SELECT 'dead_worker', id::text, 'error',
       format('worker %%s has not sent a heartbeat since %%s', id, last_heartbeat),
       jsonb_build_object('worker_id', id, 'last_heartbeat', last_heartbeat)
  FROM procrastinate_workers
 WHERE last_heartbeat < now() - make_interval(secs => %(rescue_after)s)
UNION ALL
SELECT 'stalled_job', job.id::text, 'warning',
       format('job %%s (%%s) has been running for %%s s (threshold %%s s)', job.id,
              job.task_name, round(extract(epoch FROM now() - started.at)),
              %(stalled_after)s::float8),
       jsonb_build_object('job_id', job.id, 'task', job.task_name, 'queue', job.queue_name,
                          'started_at', started.at, 'worker_id', job.worker_id)
  FROM procrastinate_jobs job
  CROSS JOIN LATERAL (
        SELECT max(event.at) AS at FROM procrastinate_events event
         WHERE event.job_id = job.id AND event.type = 'started'
  ) started
 WHERE %(stalled_after)s::float8 > 0 AND job.status = 'doing'
   AND started.at < now() - make_interval(secs => %(stalled_after)s)
UNION ALL
-- procrastinate_workers does not say which queues a worker serves: "no live worker at all".
SELECT 'unserved_queue', queue_name, 'error',
       format('queue %%s has %%s waiting jobs and no live worker', queue_name, waiting),
       jsonb_build_object('queue', queue_name, 'waiting', waiting)
  FROM backlog WHERE (SELECT n FROM live_workers) = 0
UNION ALL
SELECT 'backup_failure', 'backup', 'error',
       format('the last backup (run %%s) failed: %%s', id, coalesce(error, 'no error recorded')),
       jsonb_build_object('backup_id', id, 'error', error, 'started_at', started_at)
  FROM last_backup WHERE status = 'failed'
UNION ALL
SELECT 'backup_overdue', 'backup', 'error',
       format('no successful backup for %%s s (threshold %%s s)',
              round(extract(epoch FROM now() - at)), %(backup_age)s::float8),
       jsonb_build_object('last_succeeded_at', at, 'threshold', %(backup_age)s::float8)
  FROM last_good_backup
 WHERE %(backup_age)s::float8 > 0 AND at < now() - make_interval(secs => %(backup_age)s);

-- firing_alert_states --
-- The rules firing now, oldest first.
SELECT * FROM taskhub.alert_states WHERE firing ORDER BY firing_since, rule, subject;

-- fire_alert_state --
-- A condition starts: (re)open its state.
INSERT INTO taskhub.alert_states AS state
       (rule, subject, firing, severity, message, details, firing_since)
VALUES (%(rule)s, %(subject)s, true, %(severity)s, %(message)s, %(details)s, now())
ON CONFLICT (rule, subject) DO UPDATE
   SET firing = true, severity = excluded.severity, message = excluded.message,
       details = excluded.details, firing_since = now(), resolved_at = NULL,
       evaluated_at = now()
RETURNING *;

-- hold_alert_state --
-- A condition still holds: refresh its figures, no notification.
UPDATE taskhub.alert_states
   SET message = %(message)s, details = %(details)s, evaluated_at = now()
 WHERE rule = %(rule)s AND subject = %(subject)s;

-- resolve_alert_state --
-- A condition no longer holds.
UPDATE taskhub.alert_states
   SET firing = false, resolved_at = now(), evaluated_at = now()
 WHERE rule = %(rule)s AND subject = %(subject)s AND firing
RETURNING *;

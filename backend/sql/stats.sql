-- Task statistics (backend/tasks/stats.py, backend/control/stats.py, backend/control/metrics.py,
-- backend/dashboard/charts.py), in the format of queries.sql. taskhub.task_stats and
-- taskhub.task_totals are migration 0011's, taskhub.queue_depth migration 0013's.

-- stats_claim_window --
-- Lock the watermark (one rollup at a time, whatever the number of workers: the others skip)
-- and choose the next window: from the watermark to the horizon, at most %(max_seconds)s long.
-- An event's `at` is its transaction's start, so events before the start of the oldest
-- transaction still open are all committed: the horizon stops there, and at most
-- %(max_wait_seconds)s behind now (an event of a transaction open longer than that is missed).
WITH mark AS (
    SELECT rolled_up_to FROM taskhub.stats_watermark FOR UPDATE SKIP LOCKED
), horizon AS (
    SELECT greatest(
               least(now(), (SELECT min(xact_start) FROM pg_stat_activity
                              WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'
                                AND datname = current_database())),
               now() - make_interval(secs => %(max_wait_seconds)s)) AS at
)
SELECT mark.rolled_up_to AS since,
       least(horizon.at, mark.rolled_up_to + make_interval(secs => %(max_seconds)s)) AS until
  FROM mark, horizon;

-- stats_rollup --
-- Roll the attempts that ended in [since, until) into taskhub.task_stats (per minute, task and
-- queue) and taskhub.task_totals (per task), and move the watermark. Outcomes: the terminal
-- events (taskhub_events_finished_idx) and the hand-backs (taskhub_events_requeued_idx); a
-- hand-back is a retry when its transaction (xmin) wrote an error, a rescue when that error is
-- WorkerLost, a rate limit when it wrote a 'scheduled' event and no error, else a shutdown
-- hand-back (not counted). Duration: from the attempt's 'started' event.
WITH outcome AS (
    SELECT event.id, event.job_id, event.type::text AS type, event.at, event.xmin
      FROM procrastinate_events event
     WHERE event.type IN ('succeeded', 'failed', 'cancelled', 'aborted')
       AND event.type = ANY('{succeeded,failed,aborted}'::procrastinate_job_event_type[])
       AND event.at >= %(since)s AND event.at < %(until)s
    UNION ALL
    SELECT event.id, event.job_id,
           CASE WHEN error.type = 'WorkerLost' THEN 'rescued'
                WHEN error.type IS NOT NULL THEN 'retried'
                WHEN scheduled.id IS NOT NULL THEN 'rate_limited'
           END,
           event.at, event.xmin
      FROM procrastinate_events event
      LEFT JOIN LATERAL (
          SELECT type FROM taskhub.job_errors error
           WHERE error.job_id = event.job_id AND error.xmin = event.xmin LIMIT 1
      ) error ON true
      LEFT JOIN LATERAL (
          SELECT later.id FROM procrastinate_events later
           WHERE later.job_id = event.job_id AND later.type = 'scheduled'
             AND later.xmin = event.xmin LIMIT 1
      ) scheduled ON true
     WHERE event.type = 'deferred_for_retry'
       AND event.at >= %(since)s AND event.at < %(until)s
), attempt AS (
    SELECT date_trunc('minute', outcome.at, 'UTC') AS minute, job.task_name, job.queue_name,
           outcome.type,
           CASE WHEN outcome.type NOT IN ('rate_limited') THEN
               extract(epoch FROM outcome.at - started.at)::double precision END AS seconds
      FROM outcome
      JOIN procrastinate_jobs job ON job.id = outcome.job_id
      LEFT JOIN LATERAL (
          SELECT max(start.at) AS at FROM procrastinate_events start
           WHERE start.job_id = outcome.job_id AND start.type = 'started' AND start.id < outcome.id
      ) started ON true
     WHERE outcome.type IS NOT NULL
), per_bucket AS (
    SELECT minute, task_name, queue_name,
           width_bucket(seconds, taskhub.stats_bounds()) AS bucket, count(*) AS n
      FROM attempt WHERE seconds IS NOT NULL
     GROUP BY 1, 2, 3, 4
), histogram AS (
    SELECT keys.minute, keys.task_name, keys.queue_name,
           array_agg(coalesce(per_bucket.n, 0) ORDER BY slot) AS buckets
      FROM (SELECT DISTINCT minute, task_name, queue_name FROM attempt) keys
     CROSS JOIN generate_series(0, cardinality(taskhub.stats_bounds())) slot
      LEFT JOIN per_bucket ON per_bucket.minute = keys.minute
                          AND per_bucket.task_name = keys.task_name
                          AND per_bucket.queue_name = keys.queue_name
                          AND per_bucket.bucket = slot
     GROUP BY 1, 2, 3
), minute AS (
    SELECT minute, task_name, queue_name,
           count(*) FILTER (WHERE type = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE type = 'failed') AS failed,
           count(*) FILTER (WHERE type = 'retried') AS retried,
           count(*) FILTER (WHERE type = 'aborted') AS aborted,
           count(*) FILTER (WHERE type = 'rescued') AS rescued,
           count(*) FILTER (WHERE type = 'rate_limited') AS rate_limited,
           count(seconds) AS duration_count,
           coalesce(sum(seconds), 0) AS duration_sum
      FROM attempt GROUP BY 1, 2, 3
), rows AS (
    SELECT minute.*, histogram.buckets
      FROM minute JOIN histogram USING (minute, task_name, queue_name)
), stats AS (
    INSERT INTO taskhub.task_stats AS stat
    SELECT * FROM rows
    ON CONFLICT (minute, task_name, queue_name) DO UPDATE SET
        succeeded = stat.succeeded + excluded.succeeded,
        failed = stat.failed + excluded.failed,
        retried = stat.retried + excluded.retried,
        aborted = stat.aborted + excluded.aborted,
        rescued = stat.rescued + excluded.rescued,
        rate_limited = stat.rate_limited + excluded.rate_limited,
        duration_count = stat.duration_count + excluded.duration_count,
        duration_sum = stat.duration_sum + excluded.duration_sum,
        buckets = taskhub.add_counts(stat.buckets, excluded.buckets)
), totals AS (
    INSERT INTO taskhub.task_totals AS total
    SELECT task_name, sum(succeeded), sum(failed), sum(retried), sum(aborted), sum(rescued),
           sum(rate_limited), sum(duration_count), sum(duration_sum), taskhub.sum_counts(buckets)
      FROM rows GROUP BY task_name
    ON CONFLICT (task_name) DO UPDATE SET
        succeeded = total.succeeded + excluded.succeeded,
        failed = total.failed + excluded.failed,
        retried = total.retried + excluded.retried,
        aborted = total.aborted + excluded.aborted,
        rescued = total.rescued + excluded.rescued,
        rate_limited = total.rate_limited + excluded.rate_limited,
        duration_count = total.duration_count + excluded.duration_count,
        duration_sum = total.duration_sum + excluded.duration_sum,
        buckets = taskhub.add_counts(total.buckets, excluded.buckets)
), mark AS (
    UPDATE taskhub.stats_watermark SET rolled_up_to = %(until)s
)
SELECT (SELECT count(*) FROM attempt) AS attempts;

-- stats_prune --
-- One batch of per-minute rows older than the retention (the primary key leads with minute).
WITH old AS (
    SELECT ctid FROM taskhub.task_stats
     WHERE minute < now() - make_interval(secs => %(retention_seconds)s)
     LIMIT %(batch)s
), deleted AS (
    DELETE FROM taskhub.task_stats WHERE ctid IN (SELECT ctid FROM old) RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;

-- queue_depth_sample --
-- One sample per queue for the current minute: jobs waiting (due), scheduled (not yet due) and
-- running, counted on the active-jobs index (migration 0010) like metrics_queues, so the cost
-- follows the jobs in flight. A queue sampled earlier in the minute and empty now gets zeros;
-- the latest sample of a minute wins.
WITH counts AS (
    SELECT queue_name::text AS queue_name,
           count(*) FILTER (WHERE status = 'todo'
                              AND (scheduled_at IS NULL OR scheduled_at <= now()))::int AS waiting,
           count(*) FILTER (WHERE status = 'todo' AND scheduled_at > now())::int AS scheduled,
           count(*) FILTER (WHERE status = 'doing')::int AS running
      FROM procrastinate_jobs
     WHERE status IN ('todo', 'doing')
     GROUP BY queue_name
), emptied AS (
    SELECT depth.queue_name, 0 AS waiting, 0 AS scheduled, 0 AS running
      FROM taskhub.queue_depth depth
     WHERE depth.minute = date_trunc('minute', now(), 'UTC')
       AND NOT EXISTS (SELECT FROM counts WHERE counts.queue_name = depth.queue_name)
), sampled AS (
    INSERT INTO taskhub.queue_depth AS depth (minute, queue_name, waiting, scheduled, running)
    SELECT date_trunc('minute', now(), 'UTC'), sample.*
      FROM (SELECT * FROM counts UNION ALL SELECT * FROM emptied) sample
     ORDER BY sample.queue_name
    ON CONFLICT (minute, queue_name) DO UPDATE SET
        waiting = excluded.waiting, scheduled = excluded.scheduled, running = excluded.running
    RETURNING 1
)
SELECT count(*) AS queues FROM sampled;

-- queue_depth_prune --
-- One batch of queue depth samples older than the retention (the primary key leads with minute).
WITH old AS (
    SELECT ctid FROM taskhub.queue_depth
     WHERE minute < now() - make_interval(secs => %(retention_seconds)s)
     LIMIT %(batch)s
), deleted AS (
    DELETE FROM taskhub.queue_depth WHERE ctid IN (SELECT ctid FROM old) RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;

-- stats_series --
-- Per step (counted from since), task and queue over [since, until): outcomes and the summed duration buckets.
SELECT %(since)s::timestamptz
           + make_interval(secs => floor(extract(epoch FROM minute - %(since)s::timestamptz)
                                          / %(step)s) * %(step)s) AS at,
       task_name, queue_name,
       sum(succeeded)::bigint AS succeeded, sum(failed)::bigint AS failed,
       sum(retried)::bigint AS retried, sum(aborted)::bigint AS aborted,
       sum(rescued)::bigint AS rescued, sum(rate_limited)::bigint AS rate_limited,
       sum(duration_count)::bigint AS duration_count, sum(duration_sum) AS duration_sum,
       taskhub.sum_counts(buckets) AS buckets
  FROM taskhub.task_stats
 WHERE minute >= %(since)s AND minute < %(until)s
   AND (%(task)s::text IS NULL OR task_name = %(task)s)
   AND (%(queue)s::text IS NULL OR queue_name = %(queue)s)
 GROUP BY 1, 2, 3
 ORDER BY 2, 3, 1;

-- chart_outcomes --
-- The dashboard's charts: per step of %(step)s seconds (slot 0 starts at %(since)s) over
-- [since, until), all tasks and queues together: outcomes and the summed duration buckets.
-- Reads the range's rows of taskhub.task_stats alone (its primary key leads with minute), in
-- one pass: the buckets are summed by subscript, one per bucket of taskhub.stats_bounds() (16
-- bounds, 17 buckets; tests/integration/test_dashboard_charts.py checks the two agree), which
-- costs a third of unnesting them (bench/RESULTS.md).
SELECT floor(extract(epoch FROM minute - %(since)s::timestamptz) / %(step)s)::int AS slot,
       sum(succeeded)::bigint AS succeeded, sum(failed)::bigint AS failed,
       ARRAY[
           coalesce(sum(buckets[1]), 0), coalesce(sum(buckets[2]), 0), coalesce(sum(buckets[3]), 0),
           coalesce(sum(buckets[4]), 0), coalesce(sum(buckets[5]), 0), coalesce(sum(buckets[6]), 0),
           coalesce(sum(buckets[7]), 0), coalesce(sum(buckets[8]), 0), coalesce(sum(buckets[9]), 0),
           coalesce(sum(buckets[10]), 0), coalesce(sum(buckets[11]), 0), coalesce(sum(buckets[12]), 0),
           coalesce(sum(buckets[13]), 0), coalesce(sum(buckets[14]), 0), coalesce(sum(buckets[15]), 0),
           coalesce(sum(buckets[16]), 0), coalesce(sum(buckets[17]), 0)
       ]::bigint[] AS buckets
  FROM taskhub.task_stats
 WHERE minute >= %(since)s AND minute < %(until)s
 GROUP BY 1
 ORDER BY 1;

-- chart_queue_depth --
-- The dashboard's charts: per step of %(step)s seconds (slot 0 starts at %(since)s) over
-- [since, until), the peak over the step's minutes of the jobs waiting (summed over the queues)
-- and, apart, of those running. Reads the range's rows of taskhub.queue_depth alone.
SELECT floor(extract(epoch FROM minute - %(since)s::timestamptz) / %(step)s)::int AS slot,
       max(waiting)::bigint AS waiting, max(running)::bigint AS running
  FROM (SELECT minute, sum(waiting) AS waiting, sum(running) AS running
          FROM taskhub.queue_depth
         WHERE minute >= %(since)s AND minute < %(until)s
         GROUP BY minute) per_minute
 GROUP BY 1
 ORDER BY 1;

-- stats_bounds --
SELECT taskhub.stats_bounds() AS bounds;

-- stats_task_buckets --
-- Each task's summed duration buckets since %(since)s (for its p95).
SELECT task_name, taskhub.sum_counts(buckets) AS buckets
  FROM taskhub.task_stats
 WHERE minute >= %(since)s AND (%(task)s::text IS NULL OR task_name = %(task)s)
 GROUP BY task_name;

-- slow_jobs --
-- Jobs still kept that ran longer than their task's limit (%(limits)s: task -> seconds):
-- those that finished since %(since)s, walked on taskhub_events_finished_idx (so bounded by
-- that period's finishes, not the table), and those running now (the active-jobs index).
WITH limits AS (
    SELECT key AS task_name, value::text::double precision AS seconds
      FROM jsonb_each(%(limits)s::jsonb)
), finished AS (
    SELECT job.id, job.task_name, job.queue_name, event.type::text AS status,
           started.at AS started_at, event.at AS finished_at,
           extract(epoch FROM event.at - started.at)::double precision AS seconds
      FROM procrastinate_events event
      JOIN procrastinate_jobs job ON job.id = event.job_id
      JOIN LATERAL (
          SELECT max(start.at) AS at FROM procrastinate_events start
           WHERE start.job_id = event.job_id AND start.type = 'started' AND start.id < event.id
      ) started ON started.at IS NOT NULL
     WHERE event.type IN ('succeeded', 'failed', 'cancelled', 'aborted')
       AND event.type = ANY('{succeeded,failed,aborted}'::procrastinate_job_event_type[])
       AND event.at >= %(since)s
), running AS (
    SELECT job.id, job.task_name, job.queue_name, 'doing' AS status,
           started.at AS started_at, NULL::timestamptz AS finished_at,
           extract(epoch FROM now() - started.at)::double precision AS seconds
      FROM procrastinate_jobs job
      JOIN LATERAL (
          SELECT max(start.at) AS at FROM procrastinate_events start
           WHERE start.job_id = job.id AND start.type = 'started'
      ) started ON started.at IS NOT NULL
     WHERE job.status IN ('todo', 'doing') AND job.status = 'doing'
)
SELECT slow.*, limits.seconds AS limit_seconds
  FROM (SELECT * FROM finished UNION ALL SELECT * FROM running) slow
  JOIN limits USING (task_name)
 WHERE slow.seconds > limits.seconds
 ORDER BY slow.seconds DESC
 LIMIT %(limit)s;

-- metrics_queues --
-- Per queue: waiting (due), scheduled (not yet due), running, the oldest waiting job's
-- deferral; read on the active-jobs index (migration 0010), whatever the finished jobs.
WITH counts AS (
    SELECT queue_name,
           count(*) FILTER (WHERE status = 'todo'
                              AND (scheduled_at IS NULL OR scheduled_at <= now())) AS waiting,
           count(*) FILTER (WHERE status = 'todo' AND scheduled_at > now()) AS scheduled,
           count(*) FILTER (WHERE status = 'doing') AS running,
           min(id) FILTER (WHERE status = 'todo'
                             AND (scheduled_at IS NULL OR scheduled_at <= now())) AS oldest
      FROM procrastinate_jobs
     WHERE status IN ('todo', 'doing')
     GROUP BY queue_name
)
SELECT counts.queue_name, counts.waiting, counts.scheduled, counts.running,
       coalesce(extract(epoch FROM now() - (
           SELECT greatest(min(event.at), max(job.scheduled_at))
             FROM procrastinate_events event JOIN procrastinate_jobs job ON job.id = event.job_id
            WHERE event.job_id = counts.oldest AND event.type = 'deferred')), 0)::double precision
           AS oldest_waiting_seconds
  FROM counts
 ORDER BY counts.queue_name;

-- metrics_totals --
SELECT * FROM taskhub.task_totals ORDER BY task_name;

-- metrics_overview --
-- Workers alive (a heartbeat within %(alive_seconds)s), the last successful backup, and the
-- alerts firing now by severity (taskhub.alert_states, one row per rule and subject).
SELECT (SELECT count(*) FROM procrastinate_workers
         WHERE last_heartbeat > now() - make_interval(secs => %(alive_seconds)s)) AS workers_alive,
       (SELECT extract(epoch FROM max(finished_at)) FROM taskhub.backups
         WHERE status = 'succeeded') AS last_backup,
       (SELECT coalesce(jsonb_object_agg(severity, n), '{}'::jsonb)
          FROM (SELECT severity, count(*) AS n FROM taskhub.alert_states
                 WHERE firing GROUP BY severity) firing)
           AS alerts_firing;

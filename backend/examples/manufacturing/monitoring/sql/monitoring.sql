-- The monitoring family (tasks.py, router.py): named queries, in procrastinate's format.

-- health_lock --
-- One health check records at a time, until its transaction ends: the next one sees the rows
-- this one wrote, so an outage raises its alert once however many checks run at once.
SELECT pg_advisory_xact_lock(hashtext('manufacturing.health_check'));

-- health_ping --
-- The database's round trip.
SELECT 1 AS ok;

-- health_record --
-- This run's checks (arrays, pairwise), and for each service what its previous check said:
-- was_ok NULL for a service never checked, down_since the first failing check of the outage
-- in progress (the failing checks after the last ok one). The INSERT's rows are not visible
-- to the other parts of the statement, so "previous" is the state before this run.
WITH checks AS (
    SELECT *
      FROM unnest(%(services)s::text[], %(oks)s::boolean[], %(latencies)s::float8[],
                  %(errors)s::text[], %(details)s::jsonb[])
           AS check_ (service, ok, latency_ms, error, details)
), previous AS (
    SELECT checks.service, last.ok AS was_ok,
           (SELECT min(failing.checked_at) FROM manufacturing.health_checks failing
             WHERE failing.service = checks.service AND NOT failing.ok
               AND failing.checked_at > coalesce(
                   (SELECT max(good.checked_at) FROM manufacturing.health_checks good
                     WHERE good.service = checks.service AND good.ok), '-infinity'))
               AS down_since
      FROM checks
      LEFT JOIN LATERAL (
            SELECT ok FROM manufacturing.health_checks latest
             WHERE latest.service = checks.service
             ORDER BY latest.checked_at DESC, latest.id DESC LIMIT 1
      ) last ON true
), inserted AS (
    INSERT INTO manufacturing.health_checks (service, ok, latency_ms, error, details, job_id)
    SELECT service, ok, latency_ms, error, details, %(job_id)s FROM checks
    RETURNING id, service, ok, checked_at
)
SELECT inserted.id, inserted.service, inserted.ok, inserted.checked_at, previous.was_ok,
       previous.down_since
  FROM inserted JOIN previous USING (service)
 ORDER BY inserted.id;

-- health_latest --
-- The latest check of each service: a skip scan of health_checks_latest_idx (one probe per
-- service, whatever the history kept).
WITH RECURSIVE services AS (
    SELECT min(service) AS service FROM manufacturing.health_checks
    UNION ALL
    SELECT (SELECT min(next.service) FROM manufacturing.health_checks next
             WHERE next.service > services.service)
      FROM services WHERE services.service IS NOT NULL
)
SELECT latest.*
  FROM services
 CROSS JOIN LATERAL (
       SELECT id, service, ok, latency_ms, error, details, checked_at
         FROM manufacturing.health_checks check_
        WHERE check_.service = services.service
        ORDER BY check_.checked_at DESC, check_.id DESC LIMIT 1
 ) latest
 ORDER BY latest.service;

-- health_prune --
-- One batch of checks older than the retention.
WITH old AS (
    SELECT id FROM manufacturing.health_checks
     WHERE checked_at < now() - make_interval(days => %(retention_days)s)
     ORDER BY checked_at LIMIT %(batch)s
), deleted AS (
    DELETE FROM manufacturing.health_checks WHERE id IN (SELECT id FROM old) RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;

-- metrics_window --
-- The five whole minutes of taskhub's rollup up to its watermark (the minute it has rolled up
-- to included): figures for minutes not rolled up yet would be short.
SELECT date_trunc('minute', least(rolled_up_to, now())) - interval '4 minutes' AS since,
       date_trunc('minute', least(rolled_up_to, now())) + interval '1 minute' AS until
  FROM taskhub.stats_watermark;

-- metrics_record --
-- A window's rows (arrays, pairwise); task NULL is a queue's own row. A window already
-- recorded (a second run within the same rolled-up minute, a retry) writes nothing again.
WITH inserted AS (
    INSERT INTO manufacturing.performance_metrics
           (window_start, window_end, queue_name, task_name, succeeded, failed, retried,
            throughput_per_minute, p95_seconds, waiting, running, job_id)
    SELECT %(since)s, %(until)s, row_.*, %(job_id)s
      FROM unnest(%(queues)s::text[], %(tasks)s::text[], %(succeeded)s::int[],
                  %(failed)s::int[], %(retried)s::int[], %(throughput)s::float8[],
                  %(p95)s::float8[], %(waiting)s::int[], %(running)s::int[]) AS row_
    ON CONFLICT (window_end, queue_name, (coalesce(task_name, ''))) DO NOTHING
    RETURNING 1
)
SELECT count(*) AS written FROM inserted;

-- metrics_prune --
-- One batch of performance rows older than the retention.
WITH old AS (
    SELECT id FROM manufacturing.performance_metrics
     WHERE collected_at < now() - make_interval(days => %(retention_days)s)
     ORDER BY collected_at LIMIT %(batch)s
), deleted AS (
    DELETE FROM manufacturing.performance_metrics WHERE id IN (SELECT id FROM old)
    RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;

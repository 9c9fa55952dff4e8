-- doctor_server --
-- The server's version and clock (clock_timestamp: now() is the transaction's start).
SELECT current_setting('server_version_num')::int AS server_version_num,
       clock_timestamp() AS server_time;

-- doctor_queue_coverage --
-- Queues with waiting jobs, and whether a live worker serves each (its queues include it, or
-- it serves all queues). Read on the partial index of waiting and running jobs.
WITH waiting AS (
    SELECT DISTINCT queue_name FROM procrastinate_jobs WHERE status = 'todo'
), live AS (
    SELECT queues FROM taskhub.workers
     WHERE stopped_at IS NULL
       AND last_heartbeat >= now() - make_interval(secs => %(rescue_after)s)
)
SELECT waiting.queue_name,
       EXISTS (SELECT 1 FROM live
                WHERE live.queues IS NULL OR waiting.queue_name = ANY(live.queues)) AS served
  FROM waiting
 ORDER BY waiting.queue_name;

-- doctor_last_backup --
-- Whether a backup ever ran, and when the newest successful one finished.
SELECT EXISTS (SELECT 1 FROM taskhub.backups) AS any_run,
       (SELECT max(finished_at) FROM taskhub.backups WHERE status = 'succeeded') AS last_success;

-- doctor_listen --
LISTEN taskhub_doctor;

-- doctor_notify --
SELECT pg_notify('taskhub_doctor', %(token)s);

-- doctor_autovacuum --
-- Whether autovacuum runs, server-wide and on the jobs table (a table can turn it off alone).
SELECT current_setting('autovacuum')::bool AS server_on,
       coalesce((SELECT option_value::bool
                   FROM pg_class, pg_options_to_table(pg_class.reloptions)
                  WHERE pg_class.oid = 'procrastinate_jobs'::regclass
                    AND option_name = 'autovacuum_enabled'), true) AS table_on,
       current_setting('autovacuum_naptime') AS naptime;

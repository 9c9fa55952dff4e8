-- Alert rules' states: one row per rule and subject (a queue, a task, a worker, a job, a
-- schedule). taskhub.evaluate_alerts compares the conditions it finds with these rows under an
-- advisory lock, so a condition notifies once when it starts and once when it resolves, however
-- many evaluators run. Each transition is also an event in taskhub.alert_events.
CREATE TABLE taskhub.alert_states (
    rule text NOT NULL,
    subject text NOT NULL,
    firing boolean NOT NULL,
    severity text NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    message text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    firing_since timestamptz NOT NULL,
    resolved_at timestamptz,
    evaluated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, subject)
);
CREATE INDEX alert_states_firing_idx ON taskhub.alert_states (firing_since) WHERE firing;

-- Reporting views: for people and BI tools (docs/sql.md), not for hot paths. Finished jobs
-- disappear with pruning (TASKHUB_*_RETENTION_DAYS), and so do their rows here.

-- One row per job: its timings (waiting, running, total) and attempts.
CREATE VIEW taskhub.job_history AS
SELECT job.id AS job_id,
       job.task_name,
       job.queue_name,
       job.status::text AS status,
       job.attempts,
       times.created_at,
       times.started_at,
       times.finished_at,
       extract(epoch FROM times.first_started_at - times.created_at) AS wait_seconds,
       extract(epoch FROM times.finished_at - times.started_at) AS run_seconds,
       extract(epoch FROM times.finished_at - times.created_at) AS total_seconds,
       times.retries
  FROM procrastinate_jobs job
  LEFT JOIN LATERAL (
        SELECT min(event.at) FILTER (WHERE event.type = 'deferred') AS created_at,
               min(event.at) FILTER (WHERE event.type = 'started') AS first_started_at,
               max(event.at) FILTER (WHERE event.type = 'started') AS started_at,
               max(event.at) FILTER (
                   WHERE event.type IN ('succeeded', 'failed', 'cancelled', 'aborted')
               ) AS finished_at,
               count(*) FILTER (WHERE event.type = 'deferred_for_retry') AS retries
          FROM procrastinate_events event
         WHERE event.job_id = job.id
  ) times ON true;

-- Final failures per task and day (UTC), with the attempts they took.
CREATE VIEW taskhub.failures_by_day AS
SELECT date_trunc('day', event.at AT TIME ZONE 'UTC')::date AS day,
       job.task_name,
       count(*) AS failures,
       sum(job.attempts) AS attempts,
       max(event.at) AS last_failed_at
  FROM procrastinate_events event
  JOIN procrastinate_jobs job ON job.id = event.job_id
 WHERE event.type = 'failed'
 GROUP BY 1, 2;

-- Run times per task over finished jobs (last run of each job), in seconds.
CREATE VIEW taskhub.task_durations AS
SELECT task_name,
       count(*) AS jobs,
       avg(run_seconds) AS avg_seconds,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY run_seconds) AS p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY run_seconds) AS p95_seconds,
       max(run_seconds) AS max_seconds
  FROM taskhub.job_history
 WHERE run_seconds IS NOT NULL
 GROUP BY task_name;

-- What operators did (cancel, retry, pause, resume, ...), with the job's task when it is kept.
CREATE VIEW taskhub.operator_actions AS
SELECT audit.id,
       audit.at,
       audit.actor,
       split_part(audit.actor, ':', 1) AS channel,
       audit.action,
       audit.job_id,
       job.task_name,
       job.queue_name,
       audit.details
  FROM taskhub.audit_log audit
  LEFT JOIN procrastinate_jobs job ON job.id = audit.job_id;

-- Jobs finished per hour (UTC) and task, by outcome.
CREATE VIEW taskhub.throughput_hourly AS
SELECT date_trunc('hour', event.at AT TIME ZONE 'UTC') AS hour,
       job.task_name,
       count(*) AS finished,
       count(*) FILTER (WHERE event.type = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE event.type = 'failed') AS failed,
       count(*) FILTER (WHERE event.type IN ('cancelled', 'aborted')) AS cancelled
  FROM procrastinate_events event
  JOIN procrastinate_jobs job ON job.id = event.job_id
 WHERE event.type IN ('succeeded', 'failed', 'cancelled', 'aborted')
 GROUP BY 1, 2;

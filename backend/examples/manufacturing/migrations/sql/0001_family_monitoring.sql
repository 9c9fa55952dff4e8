-- The monitoring family: the health checks of manufacturing.health_check (every 2 minutes)
-- and the per-queue, per-task figures of manufacturing.collect_performance_metrics (every 5).

-- One row per check and run: a service (database, smtp, payment_provider) or a resource
-- (disk, load, memory). An outage is the run of failing rows after an ok one; the alerts
-- external_service_down / system_resources are raised on the first of them.
CREATE TABLE manufacturing.health_checks (
    id bigserial PRIMARY KEY,
    service text NOT NULL CHECK (service <> ''),
    ok boolean NOT NULL,
    latency_ms double precision CHECK (latency_ms >= 0),
    error text,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    job_id bigint,  -- the health check's job (no foreign key: jobs are pruned)
    checked_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ok OR error IS NOT NULL)
);
-- The latest check per service (one probe each), the previous ok one, and pruning by age.
CREATE INDEX health_checks_latest_idx ON manufacturing.health_checks (service, checked_at DESC, id DESC);
CREATE INDEX health_checks_age_idx ON manufacturing.health_checks (checked_at);

-- Five minutes of one queue: a row per task (throughput, failures, p95 from taskhub's
-- statistics rollup) and a row with task_name NULL for the queue itself (its depth).
CREATE TABLE manufacturing.performance_metrics (
    id bigserial PRIMARY KEY,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL CHECK (window_end > window_start),
    queue_name text NOT NULL,
    task_name text,  -- NULL: the queue's own row
    succeeded integer NOT NULL DEFAULT 0 CHECK (succeeded >= 0),
    failed integer NOT NULL DEFAULT 0 CHECK (failed >= 0),
    retried integer NOT NULL DEFAULT 0 CHECK (retried >= 0),
    throughput_per_minute double precision NOT NULL DEFAULT 0,
    p95_seconds double precision,
    waiting integer,  -- the queue's row only: jobs due and waiting when collected
    running integer,
    job_id bigint,
    collected_at timestamptz NOT NULL DEFAULT now()
);
-- One row per window, queue and task: a rerun of the same window writes nothing new.
CREATE UNIQUE INDEX performance_metrics_window_idx
    ON manufacturing.performance_metrics (window_end, queue_name, (coalesce(task_name, '')));
CREATE INDEX performance_metrics_age_idx ON manufacturing.performance_metrics (collected_at);

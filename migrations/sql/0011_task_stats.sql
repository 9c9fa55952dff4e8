-- Per-minute task statistics and counters that outlive pruning, filled by taskhub.rollup_stats
-- (backend/tasks/stats.py) from procrastinate_events; nothing is written on the worker's path.

-- Upper bounds (seconds) of the duration buckets; one more bucket, above the last bound, counts
-- the rest. Fixed: changing them would mix incompatible histograms.
CREATE FUNCTION taskhub.stats_bounds() RETURNS double precision[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300,900,3600}'::double precision[] $$;

-- Element-wise sum of two bucket arrays; strict, so as an aggregate's step it starts from the
-- first array.
CREATE FUNCTION taskhub.add_counts(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY n)
            FROM unnest(a, b) WITH ORDINALITY AS t(x, y, n) $$;

CREATE AGGREGATE taskhub.sum_counts(bigint[]) (SFUNC = taskhub.add_counts, STYPE = bigint[]);

-- One row per minute (UTC, truncated), task and queue: attempts by outcome and their durations
-- (from the attempt's 'started' event to its outcome). Pruned by the rollup after 30 days.
CREATE TABLE taskhub.task_stats (
    minute timestamptz NOT NULL,
    task_name varchar(128) NOT NULL,
    queue_name varchar(128) NOT NULL,
    succeeded bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    retried bigint NOT NULL DEFAULT 0,
    aborted bigint NOT NULL DEFAULT 0,
    rescued bigint NOT NULL DEFAULT 0,
    rate_limited bigint NOT NULL DEFAULT 0,
    duration_count bigint NOT NULL DEFAULT 0,
    duration_sum double precision NOT NULL DEFAULT 0,
    buckets bigint[] NOT NULL,
    PRIMARY KEY (minute, task_name, queue_name)
);
CREATE INDEX task_stats_task_minute_idx ON taskhub.task_stats (task_name, minute);

-- Per task, since the migration: only ever grows (Prometheus counters and histogram).
CREATE TABLE taskhub.task_totals (
    task_name varchar(128) PRIMARY KEY,
    succeeded bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    retried bigint NOT NULL DEFAULT 0,
    aborted bigint NOT NULL DEFAULT 0,
    rescued bigint NOT NULL DEFAULT 0,
    rate_limited bigint NOT NULL DEFAULT 0,
    duration_count bigint NOT NULL DEFAULT 0,
    duration_sum double precision NOT NULL DEFAULT 0,
    buckets bigint[] NOT NULL
);

-- Events before this instant are rolled up. One row, locked by each rollup pass.
CREATE TABLE taskhub.stats_watermark (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    rolled_up_to timestamptz NOT NULL
);
INSERT INTO taskhub.stats_watermark (rolled_up_to) VALUES (now());

-- Attempts that went back to the queue (retries, rescues, rate limits, shutdown hand-backs):
-- the rollup walks them by time. Partial: starts and finishes add nothing to it.
CREATE INDEX taskhub_events_requeued_idx ON procrastinate_events (at, id)
    WHERE type = 'deferred_for_retry';

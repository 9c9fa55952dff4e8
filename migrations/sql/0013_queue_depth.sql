-- Queue depth over time, sampled by taskhub.rollup_stats (backend/tasks/stats.py) once a
-- minute from the active jobs: one row per minute (UTC, truncated) and queue that had jobs
-- waiting, scheduled or running (a queue emptied within the minute gets zeros). Pruned with
-- taskhub.task_stats (30 days). Read by the dashboard's overview charts.
CREATE TABLE taskhub.queue_depth (
    minute timestamptz NOT NULL,
    queue_name text NOT NULL,
    waiting int NOT NULL,
    scheduled int NOT NULL,
    running int NOT NULL,
    PRIMARY KEY (minute, queue_name)
);

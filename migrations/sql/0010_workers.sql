-- The workers' own rows, keyed by procrastinate's worker id: procrastinate deletes its
-- procrastinate_workers row when a worker stops or is pruned, this one stays (shown as dead)
-- until taskhub.prune_jobs deletes it 7 days later. Written once when a worker starts, then
-- with each heartbeat (jobs_done from the worker's in-memory counter) and when it stops.
CREATE TABLE taskhub.workers (
    worker_id bigint PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    queues text[],  -- NULL: all queues
    concurrency integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz,
    jobs_done bigint NOT NULL DEFAULT 0
);

-- Pruning walks the oldest heartbeats first.
CREATE INDEX taskhub_workers_last_heartbeat_idx ON taskhub.workers (last_heartbeat);

-- Queue figures read waiting and running jobs only, whatever the number of finished ones.
CREATE INDEX taskhub_jobs_active_queue_idx ON procrastinate_jobs (queue_name, status, id)
    WHERE status IN ('todo', 'doing');

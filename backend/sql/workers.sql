-- register_worker_row --
-- A worker's own row, written once when it starts (procrastinate has just given it its id).
INSERT INTO taskhub.workers (worker_id, host, pid, queues, concurrency)
VALUES (%(worker_id)s, %(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s)
ON CONFLICT (worker_id) DO NOTHING;

-- worker_heartbeat --
-- procrastinate's heartbeat and taskhub's row in one statement: jobs done so far come from the
-- worker's in-memory counter, so jobs themselves never pay a statement for it. registered is
-- false when procrastinate's row is gone (pruned as dead): the worker registers again.
WITH mine AS (
    UPDATE taskhub.workers
       SET last_heartbeat = now(), jobs_done = %(jobs_done)s
     WHERE worker_id = %(worker_id)s
 RETURNING worker_id
)
SELECT procrastinate_update_heartbeat_v1(%(worker_id)s) AS beat,
       EXISTS (SELECT FROM procrastinate_workers WHERE id = %(worker_id)s) AS registered;

-- worker_stopped --
UPDATE taskhub.workers
   SET stopped_at = now(), jobs_done = %(jobs_done)s
 WHERE worker_id = %(worker_id)s;

-- list_workers --
-- Every worker not pruned yet, live ones first. Dead: stopped, or no heartbeat for
-- TASKHUB_RESCUE_AFTER seconds. Running jobs are counted on procrastinate's partial index of
-- doing jobs by worker (idx_procrastinate_jobs_worker_not_null).
SELECT worker.worker_id AS id, worker.host, worker.pid, worker.queues, worker.concurrency,
       worker.started_at, worker.last_heartbeat, worker.stopped_at, worker.jobs_done,
       (worker.stopped_at IS NULL
        AND worker.last_heartbeat >= now() - make_interval(secs => %(rescue_after)s)) AS alive,
       (SELECT count(*) FROM procrastinate_jobs job
         WHERE job.worker_id = worker.worker_id AND job.status = 'doing') AS jobs_running
  FROM taskhub.workers worker
 ORDER BY alive DESC, worker.started_at DESC, worker.worker_id DESC;

-- prune_workers --
-- Rows of workers silent for over 7 days (stopped ones included), one batch, oldest first.
WITH gone AS (
    DELETE FROM taskhub.workers
     WHERE worker_id IN (SELECT worker_id FROM taskhub.workers
                          WHERE last_heartbeat < now() - interval '7 days'
                          ORDER BY last_heartbeat
                          LIMIT %(batch)s)
 RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- purge_queue --
-- Delete a queue's waiting jobs (todo; running ones are left alone, and so is one a worker is
-- fetching right now), their events, progress and results cascading; a schedule's latest run
-- forgets its job first. Audited when something was deleted. Returns how many. Through
-- taskhub.purge_queue (migration 0017): the API's role may not delete jobs itself.
SELECT taskhub.purge_queue(%(queue)s, %(actor)s) AS purged;

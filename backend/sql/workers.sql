-- register_worker_row --
-- A worker's own row, written once when it starts (procrastinate has just given it its id).
INSERT INTO taskhub.workers (worker_id, host, pid, queues, concurrency)
VALUES (%(worker_id)s, %(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s)
ON CONFLICT (worker_id) DO NOTHING;

-- worker_heartbeat --
-- procrastinate's heartbeat and taskhub's row in one statement: jobs done so far come from the
-- worker's in-memory counter, so jobs themselves never pay a statement for it.
WITH mine AS (
    UPDATE taskhub.workers
       SET last_heartbeat = now(), jobs_done = %(jobs_done)s
     WHERE worker_id = %(worker_id)s
 RETURNING worker_id
)
SELECT procrastinate_update_heartbeat_v1(%(worker_id)s);

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

-- purge_unlink_schedules --
-- Before a purge: a schedule's latest run forgets its waiting job (its foreign key has no
-- cascade), so purge_queue can delete it.
UPDATE procrastinate_periodic_defers SET job_id = NULL
 WHERE job_id IN (SELECT id FROM procrastinate_jobs
                   WHERE queue_name = %(queue)s AND status = 'todo');

-- purge_queue --
-- Delete a queue's waiting jobs (todo; running ones are left alone, and so is one a worker is
-- fetching right now), their events, progress and results cascading. A schedule's job deferred
-- since purge_unlink_schedules stays. Audited when something was deleted. Returns how many.
WITH purged AS (
    DELETE FROM procrastinate_jobs job
     WHERE job.id IN (SELECT id FROM procrastinate_jobs
                       WHERE queue_name = %(queue)s AND status = 'todo'
                         FOR UPDATE SKIP LOCKED)
       AND NOT EXISTS (SELECT 1 FROM procrastinate_periodic_defers defer
                        WHERE defer.job_id = job.id)
 RETURNING job.id
), counted AS (
    SELECT count(*) AS purged FROM purged
), audited AS (
    INSERT INTO taskhub.audit_log (actor, action, details)
    SELECT %(actor)s, 'purge', jsonb_build_object('queue', %(queue)s::text, 'jobs', purged)
      FROM counted WHERE purged > 0
 RETURNING 1
)
SELECT purged FROM counted;

-- taskhub's own tables, in their own schema so procrastinate's stays exactly as it ships.
-- Rows keyed by a job go away with the job (ON DELETE CASCADE); the audit log outlives it.
CREATE SCHEMA taskhub;

-- What a running task reported last: done/total, a message and named counters.
CREATE TABLE taskhub.job_progress (
    job_id bigint PRIMARY KEY REFERENCES procrastinate_jobs (id) ON DELETE CASCADE,
    done bigint,
    total bigint,
    message text,
    counters jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The JSON a task returned, written in the same statement that finishes the job.
CREATE TABLE taskhub.job_results (
    job_id bigint PRIMARY KEY REFERENCES procrastinate_jobs (id) ON DELETE CASCADE,
    result jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per failed attempt: what was raised, and where.
CREATE TABLE taskhub.job_errors (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES procrastinate_jobs (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    type text NOT NULL,
    message text NOT NULL,
    traceback text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_errors_job_id_idx ON taskhub.job_errors (job_id, id);
CREATE INDEX job_errors_created_at_idx ON taskhub.job_errors (created_at);

-- Who did what to which job, from REST or the CLI. Kept after the job is pruned.
CREATE TABLE taskhub.audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    job_id bigint,
    details jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_job_id_idx ON taskhub.audit_log (job_id);

-- POST /jobs with an Idempotency-Key: the job that key created, per caller, for 24 hours.
CREATE TABLE taskhub.idempotency_keys (
    actor text NOT NULL,
    key text NOT NULL,
    request_hash text NOT NULL,
    job_id bigint NOT NULL REFERENCES procrastinate_jobs (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON taskhub.idempotency_keys (created_at);

-- One row per job with what people ask about it: the Celery-style state, when it was created,
-- started and finished, its progress, result and last error. The API reads it; so can you.
CREATE VIEW taskhub.job_overview AS
SELECT job.id,
       job.task_name,
       job.queue_name,
       job.priority,
       job.lock,
       job.queueing_lock,
       job.args,
       job.status::text AS status,
       CASE
           WHEN job.status = 'todo' AND job.attempts = 0 THEN 'PENDING'
           WHEN job.status = 'todo' THEN 'RETRY'
           WHEN job.status = 'doing' AND progress.job_id IS NOT NULL THEN 'PROGRESS'
           WHEN job.status = 'doing' THEN 'STARTED'
           WHEN job.status = 'succeeded' THEN 'SUCCESS'
           WHEN job.status = 'failed' THEN 'FAILURE'
           ELSE 'REVOKED'
       END AS state,
       job.scheduled_at,
       job.attempts,
       -- procrastinate also flags the waiting jobs it cancels; only a running job can abort.
       (job.abort_requested AND job.status = 'doing') AS abort_requested,
       job.worker_id,
       times.created_at,
       times.started_at,
       CASE WHEN job.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
            THEN times.finished_at END AS finished_at,
       progress.done AS progress_done,
       progress.total AS progress_total,
       progress.message AS progress_message,
       progress.counters AS progress_counters,
       progress.updated_at AS progress_updated_at,
       result.result,
       last_error.type AS last_error_type,
       last_error.message AS last_error_message,
       last_error.attempt AS last_error_attempt,
       last_error.created_at AS last_error_at
  FROM procrastinate_jobs job
  LEFT JOIN taskhub.job_progress progress ON progress.job_id = job.id
  LEFT JOIN taskhub.job_results result ON result.job_id = job.id
  LEFT JOIN LATERAL (
        SELECT min(event.at) FILTER (WHERE event.type = 'deferred') AS created_at,
               max(event.at) FILTER (WHERE event.type = 'started') AS started_at,
               max(event.at) FILTER (
                   WHERE event.type IN ('succeeded', 'failed', 'cancelled', 'aborted')
               ) AS finished_at
          FROM procrastinate_events event
         WHERE event.job_id = job.id
       ) times ON true
  LEFT JOIN LATERAL (
        SELECT error.type, error.message, error.attempt, error.created_at
          FROM taskhub.job_errors error
         WHERE error.job_id = job.id
         ORDER BY error.id DESC
         LIMIT 1
       ) last_error ON true;

-- Wake the workers of a job's queue, as procrastinate's insert trigger does for new jobs:
-- for jobs that become todo again by an UPDATE (retry by an operator, shutdown, rescue).
CREATE FUNCTION taskhub.wake_workers(job_id bigint, queue_name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    payload text := json_build_object('type', 'job_inserted', 'job_id', job_id)::text;
BEGIN
    PERFORM pg_notify('procrastinate_queue_v1#' || queue_name, payload);
    PERFORM pg_notify('procrastinate_any_queue_v1', payload);
END;
$$;

-- Who is waiting for which job to end (GET /jobs/{id}?wait=N, wait_for_job, jobs show
-- --follow). Finishing jobs NOTIFY only when someone waits: a NOTIFY per finish would cost every
-- job a global lock at commit and wake every listening backend. Unlogged: waits do not survive
-- a crash, and need no WAL.
CREATE UNLOGGED TABLE taskhub.job_waiters (
    job_id bigint NOT NULL,
    waiter uuid NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, waiter)
);

-- Runs after the row's update, with a fresh snapshot: a waiter that registered (and share-locked
-- the job row) before the finish is seen; one that comes later blocks on the row and then reads
-- the final status itself. So no wake-up is lost.
CREATE FUNCTION taskhub.notify_job_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM taskhub.job_waiters WHERE job_id = NEW.id) THEN
        PERFORM pg_notify('taskhub_job_finished', NEW.id::text);
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER taskhub_notify_job_finished
    AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('succeeded', 'failed', 'cancelled', 'aborted'))
    EXECUTE FUNCTION taskhub.notify_job_finished();

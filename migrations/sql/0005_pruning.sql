-- Pruning of finished jobs (taskhub.prune_jobs, backend/tasks/maintenance.py).

-- A job's finish time is the `at` of its terminal event. This index lets the pruner walk the
-- finishes of one type oldest first, with a keyset cursor on (at, id), instead of scanning
-- every event. Partial: only terminal events are indexed, so deferring and starting a job cost
-- nothing more; a finish adds one entry, at the right edge of its type's range.
-- Named taskhub_*: it is ours, on procrastinate's table (tests compare the rest with
-- procrastinate's schema).
CREATE INDEX taskhub_events_finished_idx ON procrastinate_events (type, at, id)
    WHERE type IN ('succeeded', 'failed', 'cancelled', 'aborted');

-- Deleting a job cascades to its idempotency keys: without this index, every deleted job
-- would cost a scan of the whole table.
CREATE INDEX idempotency_keys_job_id_idx ON taskhub.idempotency_keys (job_id);

DROP INDEX IF EXISTS taskhub.idempotency_keys_job_id_idx;
DROP INDEX IF EXISTS taskhub_events_finished_idx;

DROP INDEX taskhub_events_deferred_idx;
DROP INDEX taskhub_jobs_revoked_idx;

DROP INDEX taskhub_jobs_failed_idx;

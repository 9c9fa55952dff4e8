DROP INDEX taskhub_jobs_active_queue_idx;
DROP TABLE taskhub.workers;

DROP TRIGGER IF EXISTS taskhub_notify_job_finished ON procrastinate_jobs;
DROP VIEW IF EXISTS taskhub.job_overview;
DROP SCHEMA IF EXISTS taskhub CASCADE;

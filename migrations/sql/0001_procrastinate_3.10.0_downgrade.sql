-- Removes everything 0001_procrastinate_3.10.0.sql creates (tables take their
-- indexes and triggers with them).
-- fetch_job returns the jobs table's row type; the trigger functions go after their tables.
DROP FUNCTION IF EXISTS procrastinate_fetch_job_v2(character varying[], bigint);
DROP TABLE IF EXISTS procrastinate_periodic_defers;
DROP TABLE IF EXISTS procrastinate_events;
DROP TABLE IF EXISTS procrastinate_jobs;
DROP TABLE IF EXISTS procrastinate_workers;
DROP FUNCTION IF EXISTS procrastinate_defer_jobs_v1(procrastinate_job_to_defer_v1[]);
DROP FUNCTION IF EXISTS procrastinate_defer_periodic_job_v2(character varying, character varying, character varying, character varying, integer, character varying, bigint, jsonb);
DROP FUNCTION IF EXISTS procrastinate_finish_job_v1(bigint, procrastinate_job_status, boolean);
DROP FUNCTION IF EXISTS procrastinate_cancel_job_v1(bigint, boolean, boolean);
DROP FUNCTION IF EXISTS procrastinate_retry_job_v1(bigint, timestamp with time zone, integer, character varying, character varying);
DROP FUNCTION IF EXISTS procrastinate_retry_job_v2(bigint, timestamp with time zone, integer, character varying, character varying);
DROP FUNCTION IF EXISTS procrastinate_notify_queue_job_inserted_v1();
DROP FUNCTION IF EXISTS procrastinate_notify_queue_abort_job_v1();
DROP FUNCTION IF EXISTS procrastinate_trigger_function_status_events_insert_v1();
DROP FUNCTION IF EXISTS procrastinate_trigger_function_status_events_update_v1();
DROP FUNCTION IF EXISTS procrastinate_trigger_function_scheduled_events_v1();
DROP FUNCTION IF EXISTS procrastinate_trigger_abort_requested_events_procedure_v1();
DROP FUNCTION IF EXISTS procrastinate_unlink_periodic_defers_v1();
DROP FUNCTION IF EXISTS procrastinate_register_worker_v1();
DROP FUNCTION IF EXISTS procrastinate_unregister_worker_v1(bigint);
DROP FUNCTION IF EXISTS procrastinate_update_heartbeat_v1(bigint);
DROP FUNCTION IF EXISTS procrastinate_prune_stalled_workers_v1(double precision);
DROP TYPE IF EXISTS procrastinate_job_to_defer_v1;
DROP TYPE IF EXISTS procrastinate_job_event_type;
DROP TYPE IF EXISTS procrastinate_job_status;

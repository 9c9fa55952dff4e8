-- The work procrastinate's two per-row insert triggers do for each new job (a 'deferred' event,
-- and a NOTIFY on the job's queue channel and on the any-queue channel), done once per INSERT
-- statement for all its rows: a batch of 1,000 jobs calls one plpgsql function instead of 2,000.
-- The rows, the events (each job's in the same order) and the NOTIFY payloads are the same:
-- tests/integration/test_setwise_defer.py compares both on twin databases. procrastinate's
-- 'scheduled' event trigger stays (AFTER ROW triggers fire before AFTER STATEMENT ones, so a
-- scheduled job's 'scheduled' event still comes before its 'deferred' event, as with
-- procrastinate's triggers, which fire in name order).
CREATE FUNCTION taskhub.jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO procrastinate_events (job_id, type)
    SELECT id, 'deferred'::procrastinate_job_event_type
      FROM new_jobs
     WHERE status = 'todo'::procrastinate_job_status
     ORDER BY id;
    PERFORM pg_notify('procrastinate_queue_v1#' || queue_name, payload),
            pg_notify('procrastinate_any_queue_v1', payload)
       FROM (SELECT queue_name, json_build_object('type', 'job_inserted', 'job_id', id)::text
               FROM new_jobs
              WHERE status = 'todo'::procrastinate_job_status
              ORDER BY id) AS inserted(queue_name, payload);
    RETURN NULL;
END;
$$;

DROP TRIGGER procrastinate_jobs_notify_queue_job_inserted_v1 ON procrastinate_jobs;
DROP TRIGGER procrastinate_trigger_status_events_insert_v1 ON procrastinate_jobs;
CREATE TRIGGER taskhub_jobs_inserted
    AFTER INSERT ON procrastinate_jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION taskhub.jobs_inserted();

-- Owned by taskhub_owner like taskhub's other objects (migration 0017), when it may be.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'taskhub_owner') THEN
        ALTER FUNCTION taskhub.jobs_inserted() OWNER TO taskhub_owner;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'taskhub: % keeps owning taskhub.jobs_inserted() (%)', current_user, SQLERRM;
END;
$$;

-- Periodic ticks only move forward (tests/e2e/faults/test_clock_skew.py).
-- procrastinate_defer_periodic_job_v2 deletes the rows of a schedule's older ticks when it
-- records a newer one, so a worker whose clock lags, or one catching up its latest missed tick
-- at start, could defer a tick that had already run. taskhub defers periodic jobs through this
-- function instead (backend/runtime/manager.py): a tick at or before the newest recorded one
-- is not deferred again; otherwise procrastinate's own function does the rest.
CREATE FUNCTION taskhub.defer_periodic_job(
    _queue_name character varying,
    _lock character varying,
    _queueing_lock character varying,
    _task_name character varying,
    _priority integer,
    _periodic_id character varying,
    _defer_timestamp bigint,
    _args jsonb
)
    RETURNS bigint
    LANGUAGE plpgsql
AS $$
BEGIN
    -- The deferrers of one schedule (a few per tick, never per job) take turns.
    PERFORM pg_advisory_xact_lock(hashtext('taskhub.defer_periodic_job'),
                                  hashtext(_task_name || ':' || _periodic_id));
    IF EXISTS (
        SELECT 1 FROM procrastinate_periodic_defers
         WHERE task_name = _task_name AND periodic_id = _periodic_id
           AND defer_timestamp >= _defer_timestamp
    ) THEN
        RETURN NULL;
    END IF;
    RETURN procrastinate_defer_periodic_job_v2(
        _queue_name, _lock, _queueing_lock, _task_name, _priority, _periodic_id,
        _defer_timestamp, _args
    );
END;
$$;

-- The worker's finish connection sets taskhub.finish_notifies = 'after_commit': for the jobs
-- it finishes, the row trigger (a plpgsql call and a job_waiters lookup per job, a tenth of
-- PostgreSQL's time per no-op job) does nothing, and the worker notifies the jobs' waiters
-- itself after the batch commits (notify_finished_waiters in backend/sql/queries.sql). Every
-- other way a job ends (cancel, rescue, procrastinate's own finish) keeps the trigger.
DROP TRIGGER taskhub_notify_job_finished ON procrastinate_jobs;
CREATE TRIGGER taskhub_notify_job_finished
    AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
          AND current_setting('taskhub.finish_notifies', true) IS DISTINCT FROM 'after_commit')
    EXECUTE FUNCTION taskhub.notify_job_finished();

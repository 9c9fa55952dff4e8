DROP TRIGGER taskhub_notify_job_finished ON procrastinate_jobs;
CREATE TRIGGER taskhub_notify_job_finished
    AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('succeeded', 'failed', 'cancelled', 'aborted'))
    EXECUTE FUNCTION taskhub.notify_job_finished();

-- finish_jobs_by_function_tail --
-- How backend/sql/queries.sql's finish_jobs ended before the set-wise finish (issue 21): every
-- job of `owned` through procrastinate's own procrastinate_finish_job_v1 /
-- procrastinate_retry_job_v2, one call per job. tests/integration/test_setwise_finish.py puts
-- it in place of the set-wise UPDATEs after the statement's shared CTEs (fencing, results,
-- errors, progress, hooks) and holds the worker's statement to the result.
SELECT job_id,
       CASE WHEN outcome = 'retry'
            THEN procrastinate_retry_job_v2(job_id, retry_at, priority, queue, lock)
            ELSE procrastinate_finish_job_v1(job_id, outcome::procrastinate_job_status, false)
       END AS done
  FROM owned;

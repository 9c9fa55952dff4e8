-- Backups (taskhub.backups): named queries of backend/backups.py, in procrastinate's format.

-- backup_table_count --
-- Tables whose rows pg_dump writes (one "dumping contents of table" line each): the progress total.
SELECT count(*) AS tables
  FROM pg_class rel
  JOIN pg_namespace nsp ON nsp.oid = rel.relnamespace
 WHERE rel.relkind = 'r'
   AND nsp.nspname NOT IN ('pg_catalog', 'information_schema')
   AND nsp.nspname !~ '^pg_(toast|temp_|toast_temp_)'
   AND NOT EXISTS (
        SELECT 1 FROM pg_depend dep
         WHERE dep.classid = 'pg_class'::regclass AND dep.objid = rel.oid AND dep.deptype = 'e'
       );

-- fail_interrupted_backups --
-- 'running' rows whose job no longer runs (a killed worker, an earlier attempt of this job)
-- become failed: backups run one at a time, so nothing else can still be writing them.
UPDATE taskhub.backups backup
   SET status = 'failed',
       finished_at = now(),
       error = 'interrupted: the worker running it stopped before it finished'
 WHERE backup.status = 'running'
   AND (backup.job_id IS NULL
        OR backup.job_id = %(job_id)s
        OR NOT EXISTS (SELECT 1 FROM procrastinate_jobs job
                        WHERE job.id = backup.job_id AND job.status = 'doing'))
RETURNING backup.*;

-- start_backup --
-- The 'running' row, committed before pg_dump starts.
INSERT INTO taskhub.backups (job_id, attempt, server_version)
VALUES (%(job_id)s, %(attempt)s, %(server_version)s)
RETURNING *;

-- set_backup_path --
-- Where the file of a run goes (its name carries the row's id).
UPDATE taskhub.backups SET path = %(path)s WHERE id = %(backup_id)s RETURNING *;

-- finish_backup --
-- A run that wrote and verified its file.
UPDATE taskhub.backups
   SET status = 'succeeded',
       finished_at = now(),
       size_bytes = %(size_bytes)s,
       tables = %(tables)s,
       toc_entries = %(toc_entries)s,
       pg_dump = %(pg_dump)s
 WHERE id = %(backup_id)s
RETURNING *;

-- fail_backup --
-- A run that failed: no file is left, the error says why.
UPDATE taskhub.backups
   SET status = 'failed',
       finished_at = now(),
       error = %(error)s,
       pg_dump = COALESCE(%(pg_dump)s, pg_dump)
 WHERE id = %(backup_id)s
RETURNING *;

-- backups_past_retention --
-- Successful backups whose file retention may delete: beyond the newest `keep` and, when
-- keep_days > 0, started more than that many days before `now`. The newest is never one.
SELECT ranked.id, ranked.path, ranked.started_at
  FROM (SELECT backup.id, backup.path, backup.started_at,
               row_number() OVER (ORDER BY backup.started_at DESC, backup.id DESC) AS rank
          FROM taskhub.backups backup
         WHERE backup.status = 'succeeded' AND backup.deleted_at IS NULL) ranked
 WHERE ranked.rank > greatest(%(keep)s::integer, 1)
   AND (%(keep_days)s::double precision <= 0
        OR ranked.started_at < %(now)s::timestamptz
                               - make_interval(secs => %(keep_days)s::double precision * 86400))
 ORDER BY ranked.started_at, ranked.id;

-- mark_backups_deleted --
-- Retention removed these files; the rows stay as history.
UPDATE taskhub.backups SET deleted_at = now()
 WHERE id = ANY(%(ids)s) AND deleted_at IS NULL;

-- list_backups --
-- Recent runs, newest first, optionally of one status.
SELECT * FROM taskhub.backups
 WHERE (%(status)s::text IS NULL OR status = %(status)s)
 ORDER BY started_at DESC, id DESC
 LIMIT %(limit)s;

-- get_backup --
-- One run by id.
SELECT * FROM taskhub.backups WHERE id = %(backup_id)s;

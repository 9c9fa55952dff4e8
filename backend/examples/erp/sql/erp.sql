-- The ERP sync (service.py): named queries, in procrastinate's format.

-- erp_fail_interrupted_runs --
-- 'running' runs of this kind that nothing runs any more (a killed worker, an earlier attempt
-- of this very job) become failed. ERP syncs run one at a time (their lock), so nothing else
-- can still be writing them; a presumed-dead attempt that wakes up is fenced by this status.
UPDATE erp.sync_runs run
   SET status = 'failed',
       finished_at = now(),
       error = 'interrupted: the worker running it stopped before it finished'
 WHERE run.kind = %(kind)s
   AND run.status = 'running'
   AND (run.job_id IS NULL
        OR run.job_id = %(job_id)s
        OR NOT EXISTS (SELECT 1 FROM procrastinate_jobs job
                        WHERE job.id = run.job_id AND job.status = 'doing'))
RETURNING run.id;

-- erp_resume_point --
-- The latest earlier attempt of this job, whose checkpoint a retry continues from.
SELECT * FROM erp.sync_runs
 WHERE job_id = %(job_id)s AND status = 'failed'
 ORDER BY id DESC
 LIMIT 1;

-- erp_last_success --
-- The watermark of the latest successful sync of this kind: an incremental sync asks the ERP
-- for the records changed since then.
SELECT id, watermark FROM erp.sync_runs
 WHERE kind = %(kind)s AND status = 'succeeded'
 ORDER BY watermark DESC, id DESC
 LIMIT 1;

-- erp_start_run --
-- A run's 'running' row, committed before the first page is asked for. A resumed run carries
-- on its predecessor's checkpoint, mode and watermark.
INSERT INTO erp.sync_runs (kind, job_id, attempt, full_sync, since, watermark, resumed_from,
                           next_page, pages_done, total, processed, created, updated)
SELECT %(kind)s, %(job_id)s, %(attempt)s,
       COALESCE(previous.full_sync, %(full_sync)s),
       CASE WHEN previous.id IS NULL THEN %(since)s::timestamptz ELSE previous.since END,
       COALESCE(previous.watermark, now()),
       previous.id,
       COALESCE(previous.next_page, 1),
       COALESCE(previous.pages_done, 0),
       previous.total,
       COALESCE(previous.processed, 0),
       COALESCE(previous.created, 0),
       COALESCE(previous.updated, 0)
  FROM (SELECT 1) one
  LEFT JOIN erp.sync_runs previous ON previous.id = %(resume_from)s
RETURNING *;

-- erp_upsert_assets_page --
-- One page of assets in one statement: inserted or updated set-wise (a row changes only when
-- the ERP's data differs), and the run's checkpoint moved past the page, in the same
-- transaction. Nothing happens, and no row comes back, once the run is no longer 'running'.
WITH run AS (
    SELECT id FROM erp.sync_runs WHERE id = %(run_id)s AND status = 'running' FOR UPDATE
), page AS (
    SELECT DISTINCT ON (item.id) item.*
      FROM run, jsonb_to_recordset(%(items)s::jsonb) AS item(
               id text, code text, name text, category text, status text, location_id text,
               serial_number text, purchase_date date, purchase_cost numeric,
               updated_at timestamptz)
     ORDER BY item.id, item.updated_at DESC
), upserted AS (
    INSERT INTO erp.assets AS asset (erp_id, code, name, category, status, location_erp_id,
                                     serial_number, purchase_date, purchase_cost, erp_updated_at)
    SELECT id, code, name, category, status, location_id, serial_number, purchase_date,
           purchase_cost, updated_at
      FROM page
    ON CONFLICT (erp_id) DO UPDATE
       SET code = EXCLUDED.code,
           name = EXCLUDED.name,
           category = EXCLUDED.category,
           status = EXCLUDED.status,
           location_erp_id = EXCLUDED.location_erp_id,
           serial_number = EXCLUDED.serial_number,
           purchase_date = EXCLUDED.purchase_date,
           purchase_cost = EXCLUDED.purchase_cost,
           erp_updated_at = EXCLUDED.erp_updated_at,
           updated_at = now()
     WHERE (asset.code, asset.name, asset.category, asset.status, asset.location_erp_id,
            asset.serial_number, asset.purchase_date, asset.purchase_cost, asset.erp_updated_at)
           IS DISTINCT FROM
           (EXCLUDED.code, EXCLUDED.name, EXCLUDED.category, EXCLUDED.status,
            EXCLUDED.location_erp_id, EXCLUDED.serial_number, EXCLUDED.purchase_date,
            EXCLUDED.purchase_cost, EXCLUDED.erp_updated_at)
    RETURNING (xmax = 0) AS inserted
), counts AS (
    SELECT (SELECT count(*) FROM page) AS received,
           count(*) FILTER (WHERE inserted) AS created,
           count(*) FILTER (WHERE NOT inserted) AS updated
      FROM upserted
)
UPDATE erp.sync_runs target
   SET next_page = %(next_page)s,
       pages_done = target.pages_done + 1,
       total = %(total)s,
       processed = target.processed + counts.received,
       created = target.created + counts.created,
       updated = target.updated + counts.updated
  FROM run, counts
 WHERE target.id = run.id
RETURNING target.*;

-- erp_upsert_locations_page --
-- One page of locations in one statement; see erp_upsert_assets_page.
WITH run AS (
    SELECT id FROM erp.sync_runs WHERE id = %(run_id)s AND status = 'running' FOR UPDATE
), page AS (
    SELECT DISTINCT ON (item.id) item.*
      FROM run, jsonb_to_recordset(%(items)s::jsonb) AS item(
               id text, code text, name text, parent_id text, address text,
               updated_at timestamptz)
     ORDER BY item.id, item.updated_at DESC
), upserted AS (
    INSERT INTO erp.locations AS location (erp_id, code, name, parent_erp_id, address,
                                           erp_updated_at)
    SELECT id, code, name, parent_id, address, updated_at
      FROM page
    ON CONFLICT (erp_id) DO UPDATE
       SET code = EXCLUDED.code,
           name = EXCLUDED.name,
           parent_erp_id = EXCLUDED.parent_erp_id,
           address = EXCLUDED.address,
           erp_updated_at = EXCLUDED.erp_updated_at,
           updated_at = now()
     WHERE (location.code, location.name, location.parent_erp_id, location.address,
            location.erp_updated_at)
           IS DISTINCT FROM
           (EXCLUDED.code, EXCLUDED.name, EXCLUDED.parent_erp_id, EXCLUDED.address,
            EXCLUDED.erp_updated_at)
    RETURNING (xmax = 0) AS inserted
), counts AS (
    SELECT (SELECT count(*) FROM page) AS received,
           count(*) FILTER (WHERE inserted) AS created,
           count(*) FILTER (WHERE NOT inserted) AS updated
      FROM upserted
)
UPDATE erp.sync_runs target
   SET next_page = %(next_page)s,
       pages_done = target.pages_done + 1,
       total = %(total)s,
       processed = target.processed + counts.received,
       created = target.created + counts.created,
       updated = target.updated + counts.updated
  FROM run, counts
 WHERE target.id = run.id
RETURNING target.*;

-- erp_finish_run --
-- A run that went through every page. No row once the run is no longer 'running'.
UPDATE erp.sync_runs
   SET status = 'succeeded', finished_at = now()
 WHERE id = %(run_id)s AND status = 'running'
RETURNING *;

-- erp_fail_run --
-- A run that stopped on an error; its checkpoint stays for the retry to resume from.
UPDATE erp.sync_runs
   SET status = 'failed', finished_at = now(), error = %(error)s
 WHERE id = %(run_id)s AND status = 'running'
RETURNING *;

-- erp_list_runs --
-- The run history, newest first, optionally of one kind and one status.
SELECT * FROM erp.sync_runs
 WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)
   AND (%(status)s::text IS NULL OR status = %(status)s)
 ORDER BY started_at DESC, id DESC
 LIMIT %(limit)s;

-- erp_waiting_job --
-- The waiting job holding a queueing lock, if any (one more would be refused).
SELECT id FROM procrastinate_jobs
 WHERE queueing_lock = %(queueing_lock)s AND status = 'todo'
 ORDER BY id
 LIMIT 1;

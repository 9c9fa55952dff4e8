-- The sync family (sync/tasks.py): named queries, in procrastinate's format.

-- sync_begin --
-- Start or resume the sync of one ERP resource. No sync in progress: a new one, asking for
-- changes since a minute before the last complete sync started (clocks differ; the upserts are
-- idempotent), or for everything when there was none or a full sync is forced. A sync in
-- progress (an attempt failed or died): resumed at its checkpoint, same since.
INSERT INTO manufacturing.sync_state AS state (resource, run_started_at, job_id)
VALUES (%(resource)s, now(), %(job_id)s)
ON CONFLICT (resource) DO UPDATE
   SET run_started_at = CASE WHEN state.run_started_at IS NULL OR %(force_full)s
                             THEN now() ELSE state.run_started_at END,
       run_since = CASE WHEN state.run_started_at IS NULL OR %(force_full)s
                        THEN CASE WHEN %(force_full)s THEN NULL
                                  ELSE state.watermark - interval '1 minute' END
                        ELSE state.run_since END,
       next_page = CASE WHEN state.run_started_at IS NULL OR %(force_full)s
                        THEN 1 ELSE state.next_page END,
       processed = CASE WHEN state.run_started_at IS NULL OR %(force_full)s
                        THEN 0 ELSE state.processed END,
       created = CASE WHEN state.run_started_at IS NULL OR %(force_full)s
                      THEN 0 ELSE state.created END,
       updated = CASE WHEN state.run_started_at IS NULL OR %(force_full)s
                      THEN 0 ELSE state.updated END,
       job_id = %(job_id)s
RETURNING *;

-- sync_upsert_locations_page --
-- One page of ERP locations into manufacturing.sites and the checkpoint moved past it, in one
-- statement (so in one transaction). Unchanged rows are not rewritten; created/updated counted.
WITH item AS (
    SELECT DISTINCT ON (id) *
      FROM jsonb_to_recordset(%(items)s::jsonb)
           AS r(id text, code text, name text, parent_id text, address text,
                updated_at timestamptz)
     ORDER BY id
), upserted AS (
    INSERT INTO manufacturing.sites AS site
           (erp_id, code, name, parent_erp_id, address, erp_updated_at)
    SELECT id, code, name, parent_id, address, updated_at FROM item
    ON CONFLICT (erp_id) DO UPDATE
       SET code = excluded.code, name = excluded.name, parent_erp_id = excluded.parent_erp_id,
           address = excluded.address, erp_updated_at = excluded.erp_updated_at,
           synced_at = now()
     WHERE (site.code, site.name, site.parent_erp_id, site.address, site.erp_updated_at)
           IS DISTINCT FROM (excluded.code, excluded.name, excluded.parent_erp_id,
                             excluded.address, excluded.erp_updated_at)
    RETURNING (xmax = 0) AS created
)
UPDATE manufacturing.sync_state
   SET next_page = %(next_page)s,
       processed = processed + (SELECT count(*) FROM item),
       created = created + (SELECT count(*) FROM upserted WHERE created),
       updated = updated + (SELECT count(*) FROM upserted WHERE NOT created)
 WHERE resource = 'locations' AND run_started_at IS NOT NULL
RETURNING *;

-- sync_upsert_assets_page --
-- One page of ERP assets into manufacturing.equipment and the checkpoint, as for locations.
WITH item AS (
    SELECT DISTINCT ON (id) *
      FROM jsonb_to_recordset(%(items)s::jsonb)
           AS r(id text, code text, name text, category text, status text, location_id text,
                serial_number text, purchase_date date, purchase_cost numeric,
                updated_at timestamptz)
     ORDER BY id
), upserted AS (
    INSERT INTO manufacturing.equipment AS equipment
           (erp_id, code, name, category, status, site_erp_id, serial_number, purchase_date,
            purchase_cost, erp_updated_at)
    SELECT id, code, name, category, status, location_id, serial_number, purchase_date,
           purchase_cost, updated_at
      FROM item
    ON CONFLICT (erp_id) DO UPDATE
       SET code = excluded.code, name = excluded.name, category = excluded.category,
           status = excluded.status, site_erp_id = excluded.site_erp_id,
           serial_number = excluded.serial_number, purchase_date = excluded.purchase_date,
           purchase_cost = excluded.purchase_cost, erp_updated_at = excluded.erp_updated_at,
           synced_at = now()
     WHERE (equipment.code, equipment.name, equipment.category, equipment.status,
            equipment.site_erp_id, equipment.serial_number, equipment.purchase_date,
            equipment.purchase_cost, equipment.erp_updated_at)
           IS DISTINCT FROM (excluded.code, excluded.name, excluded.category, excluded.status,
                             excluded.site_erp_id, excluded.serial_number,
                             excluded.purchase_date, excluded.purchase_cost,
                             excluded.erp_updated_at)
    RETURNING (xmax = 0) AS created
)
UPDATE manufacturing.sync_state
   SET next_page = %(next_page)s,
       processed = processed + (SELECT count(*) FROM item),
       created = created + (SELECT count(*) FROM upserted WHERE created),
       updated = updated + (SELECT count(*) FROM upserted WHERE NOT created)
 WHERE resource = 'assets' AND run_started_at IS NOT NULL
RETURNING *;

-- sync_finish --
-- The sync of a resource is complete: its start is the next one's watermark.
UPDATE manufacturing.sync_state
   SET watermark = run_started_at, run_started_at = NULL, run_since = NULL, next_page = 1,
       last_completed_at = now(), last_error = NULL
 WHERE resource = %(resource)s AND run_started_at IS NOT NULL
RETURNING *;

-- sync_record_error --
-- Why the last attempt stopped; the checkpoint stays for the next one.
UPDATE manufacturing.sync_state SET last_error = %(error)s WHERE resource = %(resource)s;

-- sync_get_state --
SELECT * FROM manufacturing.sync_state ORDER BY resource;

-- archive_cutoff --
-- Rows last changed before this are archived (the database's clock, not the worker's).
SELECT now() - make_interval(days => %(days)s) AS cutoff;

-- archive_emails --
-- One batch of finished emails (sent, refused, bounced, skipped, or failed and given up) not
-- changed since the cutoff, with all their attempts, moved into the archive. SKIP LOCKED: rows
-- a task is updating right now wait for the next run.
WITH batch AS (
    SELECT id
      FROM manufacturing.emails
     WHERE updated_at < %(cutoff)s
       AND (status IN ('sent', 'refused', 'bounced', 'skipped')
            OR (status = 'failed' AND next_retry_at IS NULL))
     ORDER BY updated_at, id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), attempts AS (
    DELETE FROM manufacturing.email_attempts attempt
     USING batch
     WHERE attempt.email_id = batch.id
    RETURNING attempt.*
), archived_attempts AS (
    INSERT INTO manufacturing.email_attempts_archive SELECT * FROM attempts RETURNING 1
), emails AS (
    DELETE FROM manufacturing.emails email
     USING batch
     WHERE email.id = batch.id
    RETURNING email.*
), archived AS (
    INSERT INTO manufacturing.emails_archive SELECT * FROM emails RETURNING 1
)
SELECT (SELECT count(*) FROM archived) AS moved,
       (SELECT count(*) FROM archived_attempts) AS related;

-- archive_payments --
-- One batch of declined payments not changed since the cutoff. Paid ones stay: their invoices
-- point at them and reconcile_payments compares them with the provider's charges.
WITH batch AS (
    SELECT id
      FROM manufacturing.payments
     WHERE status = 'declined' AND updated_at < %(cutoff)s
     ORDER BY updated_at, id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM manufacturing.payments payment
     USING batch
     WHERE payment.id = batch.id
    RETURNING payment.*
), archived AS (
    INSERT INTO manufacturing.payments_archive SELECT * FROM moved RETURNING 1
)
SELECT count(*) AS moved, 0 AS related FROM archived;

-- archive_orders --
-- One batch of shipped or cancelled orders not changed since the cutoff, with their status
-- history (order_events). Their line bookings (capacity of days long past) go with them.
WITH batch AS (
    SELECT id
      FROM manufacturing.orders
     WHERE status IN ('shipped', 'cancelled') AND updated_at < %(cutoff)s
     ORDER BY updated_at, id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), events AS (
    DELETE FROM manufacturing.order_events event
     USING batch
     WHERE event.order_id = batch.id
    RETURNING event.*
), archived_events AS (
    INSERT INTO manufacturing.order_events_archive SELECT * FROM events RETURNING 1
), moved AS (
    DELETE FROM manufacturing.orders ord
     USING batch
     WHERE ord.id = batch.id
    RETURNING ord.*
), archived AS (
    INSERT INTO manufacturing.orders_archive SELECT * FROM moved RETURNING 1
)
SELECT (SELECT count(*) FROM archived) AS moved,
       (SELECT count(*) FROM archived_events) AS related;

-- backup_waiting_job --
-- The backup job already waiting under the core backup task's queueing lock.
SELECT id FROM procrastinate_jobs WHERE queueing_lock = %(queueing_lock)s AND status = 'todo';

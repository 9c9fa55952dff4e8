-- The sync and analytics families: the ERP's sites and equipment, the sync's checkpoint, the
-- archive tables, metric snapshots and their 5-minute rollup, customer activity and daily KPIs.
-- Named to sort after the email, orders and payments files: it copies and indexes their tables.

-- == sync ======================================================================================

-- The ERP's locations and assets (its stand-in: backend/examples/erp/standin.py), keyed by the
-- ERP's ids; erp_updated_at is the ERP's own change time, synced_at ours.
CREATE TABLE manufacturing.sites (
    erp_id text PRIMARY KEY,
    code text NOT NULL,
    name text NOT NULL,
    parent_erp_id text,
    address text,
    erp_updated_at timestamptz NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE manufacturing.equipment (
    erp_id text PRIMARY KEY,
    code text NOT NULL,
    name text NOT NULL,
    category text,
    status text NOT NULL,
    site_erp_id text,  -- no foreign key: the ERP may send an asset before its location
    serial_number text,
    purchase_date date,
    purchase_cost numeric(14, 2),
    erp_updated_at timestamptz NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now()
);

-- One row per ERP resource: the checkpoint of manufacturing.sync_external_data. watermark: when
-- the last complete sync started (the next one asks for changes since then); run_started_at:
-- a sync in progress (NULL: none), which the next attempt resumes at next_page.
CREATE TABLE manufacturing.sync_state (
    resource text PRIMARY KEY CHECK (resource IN ('locations', 'assets')),
    watermark timestamptz,
    run_started_at timestamptz,
    run_since timestamptz,
    next_page integer NOT NULL DEFAULT 1 CHECK (next_page >= 1),
    processed integer NOT NULL DEFAULT 0,
    created integer NOT NULL DEFAULT 0,
    updated integer NOT NULL DEFAULT 0,
    job_id bigint,
    last_completed_at timestamptz,
    last_error text
);

-- The archive: each table is its live table's columns (as they are when this runs; generated
-- columns become plain ones) plus when the row was moved.
CREATE TABLE manufacturing.emails_archive (LIKE manufacturing.emails, PRIMARY KEY (id));
ALTER TABLE manufacturing.emails_archive ADD COLUMN archived_at timestamptz NOT NULL DEFAULT now();
CREATE TABLE manufacturing.email_attempts_archive (
    LIKE manufacturing.email_attempts, PRIMARY KEY (id)
);
ALTER TABLE manufacturing.email_attempts_archive
    ADD COLUMN archived_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX email_attempts_archive_email_idx
    ON manufacturing.email_attempts_archive (email_id);
CREATE TABLE manufacturing.payments_archive (LIKE manufacturing.payments, PRIMARY KEY (id));
ALTER TABLE manufacturing.payments_archive
    ADD COLUMN archived_at timestamptz NOT NULL DEFAULT now();
CREATE TABLE manufacturing.orders_archive (LIKE manufacturing.orders, PRIMARY KEY (id));
ALTER TABLE manufacturing.orders_archive ADD COLUMN archived_at timestamptz NOT NULL DEFAULT now();
CREATE TABLE manufacturing.order_events_archive (
    LIKE manufacturing.order_events, PRIMARY KEY (id)
);
ALTER TABLE manufacturing.order_events_archive
    ADD COLUMN archived_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX order_events_archive_order_idx ON manufacturing.order_events_archive (order_id);

-- == indexes on the business tables, for archiving and analytics ===============================
-- Each task reads recent or active rows only: these let it skip the rest.

-- Recently changed rows (the last hour's figures, the archive's cutoff, 7-day activity).
CREATE INDEX emails_updated_idx ON manufacturing.emails (updated_at);
CREATE INDEX email_attempts_finished_idx ON manufacturing.email_attempts (finished_at);
CREATE INDEX payments_updated_idx ON manufacturing.payments (updated_at);
CREATE INDEX payments_paid_at_idx ON manufacturing.payments (paid_at) WHERE paid_at IS NOT NULL;
-- Open orders by status, and orders that reached a status recently.
CREATE INDEX orders_status_updated_idx ON manufacturing.orders (status, updated_at);
CREATE INDEX orders_created_idx ON manufacturing.orders (created_at);

-- == analytics =================================================================================

-- A snapshot every 2 minutes (manufacturing.update_realtime_metrics): open orders by status
-- now, and what happened in the hour before taken_at. Kept a day.
CREATE TABLE manufacturing.metric_snapshots (
    id bigserial PRIMARY KEY,
    taken_at timestamptz NOT NULL DEFAULT now(),
    orders_pending integer NOT NULL,
    orders_matched integer NOT NULL,
    orders_unmatched integer NOT NULL,
    orders_in_production integer NOT NULL,
    orders_shipped_last_hour integer NOT NULL,
    orders_cancelled_last_hour integer NOT NULL,
    payments_pending_last_hour integer NOT NULL,
    payments_paid_last_hour integer NOT NULL,
    payments_failed_last_hour integer NOT NULL,  -- failed or declined
    emails_queued_last_hour integer NOT NULL,
    emails_sent_last_hour integer NOT NULL,
    emails_failed_last_hour integer NOT NULL  -- failed, refused or bounced
);
CREATE INDEX metric_snapshots_taken_idx ON manufacturing.metric_snapshots (taken_at);

-- The snapshots rolled into 5-minute buckets (manufacturing.update_dashboard_metrics): open
-- orders averaged and at their peak; the last-hour figures as the bucket's latest snapshot had
-- them. Recomputed while a bucket still gets snapshots; kept after the snapshots are pruned.
CREATE TABLE manufacturing.dashboard_metrics (
    bucket_start timestamptz PRIMARY KEY,
    snapshots integer NOT NULL CHECK (snapshots > 0),
    open_orders_avg numeric(12, 2) NOT NULL,
    open_orders_max integer NOT NULL,
    orders_shipped_last_hour integer NOT NULL,
    payments_paid_last_hour integer NOT NULL,
    payments_failed_last_hour integer NOT NULL,
    emails_sent_last_hour integer NOT NULL,
    emails_failed_last_hour integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Per customer (lower-cased email) with any activity in the 7 days before analyzed_at
-- (manufacturing.analyze_user_behavior); rebuilt every 6 hours, so a customer with no activity
-- in 7 days has no row. segment: see analytics/tasks.py.
CREATE TABLE manufacturing.customer_activity (
    customer_email text PRIMARY KEY CHECK (customer_email = lower(customer_email)),
    orders_6h integer NOT NULL,
    orders_7d integer NOT NULL,
    orders_cancelled_7d integer NOT NULL,
    payments_paid_7d integer NOT NULL,
    payments_failed_7d integer NOT NULL,
    emails_bounced_7d integer NOT NULL,
    last_order_at timestamptz,
    segment text NOT NULL CHECK (segment IN ('at_risk', 'active', 'quiet')),
    analyzed_at timestamptz NOT NULL
);

-- One row per day (UTC) with its KPIs and the CSV report the router serves; a rerun for the
-- same day replaces both.
CREATE TABLE manufacturing.daily_kpis (
    day date PRIMARY KEY,
    orders_created integer NOT NULL,
    orders_shipped integer NOT NULL,
    orders_cancelled integer NOT NULL,
    payments_paid integer NOT NULL,
    payments_failed integer NOT NULL,
    revenue_cents jsonb NOT NULL CHECK (jsonb_typeof(revenue_cents) = 'object'),
    emails_sent integer NOT NULL,
    emails_failed integer NOT NULL,
    emails_bounced integer NOT NULL,
    report_csv text NOT NULL,
    job_id bigint,
    generated_at timestamptz NOT NULL DEFAULT now()
);

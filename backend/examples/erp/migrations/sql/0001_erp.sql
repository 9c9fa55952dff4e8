-- The ERP sync example (service.py): the business tables it fills and the history of its
-- runs, in a schema of their own so taskhub's and procrastinate's stay as they are.
-- IF NOT EXISTS throughout: a database where taskhub's old revision 0007 made them keeps them.
CREATE SCHEMA IF NOT EXISTS erp;

-- Locations as the ERP knows them, keyed by the ERP's id; upserted a page at a time.
CREATE TABLE IF NOT EXISTS erp.locations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    erp_id text NOT NULL UNIQUE,
    code text NOT NULL,
    name text NOT NULL,
    parent_erp_id text,
    address text,
    erp_updated_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Assets as the ERP knows them. No foreign key to erp.locations: the two sync separately,
-- and an asset may arrive before its location.
CREATE TABLE IF NOT EXISTS erp.assets (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    erp_id text NOT NULL UNIQUE,
    code text NOT NULL,
    name text NOT NULL,
    category text,
    status text NOT NULL,
    location_erp_id text,
    serial_number text,
    purchase_date date,
    purchase_cost numeric(14, 2),
    erp_updated_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS assets_location_erp_id_idx ON erp.assets (location_erp_id);

-- One row per attempt of a sync job, kept as history (no foreign key: pruning a job keeps
-- its runs). The checkpoint (next_page and the counters) commits with each page's upsert, so
-- a retried or rescued job resumes where the last committed page left off.
CREATE TABLE IF NOT EXISTS erp.sync_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('assets', 'locations')),
    job_id bigint,
    attempt integer,
    status text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'failed')),
    full_sync boolean NOT NULL,
    -- Records changed at or after this time were asked for; NULL: every record (a full sync).
    since timestamptz,
    -- When the first attempt of this sync started: the next incremental sync's `since`.
    watermark timestamptz NOT NULL DEFAULT now(),
    resumed_from bigint REFERENCES erp.sync_runs (id),
    next_page integer NOT NULL DEFAULT 1 CHECK (next_page >= 1),
    pages_done integer NOT NULL DEFAULT 0,
    total integer,
    processed integer NOT NULL DEFAULT 0,
    created integer NOT NULL DEFAULT 0,
    updated integer NOT NULL DEFAULT 0,
    error text,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    duration_seconds double precision
        GENERATED ALWAYS AS (extract(epoch FROM finished_at - started_at)) STORED
);
CREATE INDEX IF NOT EXISTS sync_runs_kind_started_idx ON erp.sync_runs (kind, started_at DESC);
CREATE INDEX IF NOT EXISTS sync_runs_job_idx ON erp.sync_runs (job_id, id DESC);
CREATE INDEX IF NOT EXISTS sync_runs_success_idx ON erp.sync_runs (kind, watermark DESC)
    WHERE status = 'succeeded';
CREATE INDEX IF NOT EXISTS sync_runs_running_idx ON erp.sync_runs (kind) WHERE status = 'running';

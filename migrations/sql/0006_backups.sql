-- Database backups: one row per run of taskhub.backup_database, written when it starts (so a
-- crash leaves a visible 'running' row) and again when it ends. Kept after the job is pruned
-- and after retention deletes the file (deleted_at), so the history stays readable.
CREATE TABLE taskhub.backups (
    id bigserial PRIMARY KEY,
    job_id bigint,
    attempt integer,
    status text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'failed')),
    path text,
    size_bytes bigint,
    tables integer,
    toc_entries integer,
    server_version text,
    pg_dump text,
    error text,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    duration_seconds double precision
        GENERATED ALWAYS AS (extract(epoch FROM finished_at - started_at)) STORED,
    deleted_at timestamptz
);
CREATE INDEX backups_started_at_idx ON taskhub.backups (started_at DESC);
CREATE INDEX backups_running_idx ON taskhub.backups (id) WHERE status = 'running';

-- Things an operator must hear about (a failed backup, ...). Inserted by backend.alerts; a
-- later delivery (webhooks) reads from here.
CREATE TABLE taskhub.alert_events (
    id bigserial PRIMARY KEY,
    raised_at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL,
    severity text NOT NULL DEFAULT 'error'
        CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    message text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    job_id bigint
);
CREATE INDEX alert_events_raised_at_idx ON taskhub.alert_events (raised_at DESC);
CREATE INDEX alert_events_kind_idx ON taskhub.alert_events (kind, raised_at DESC);

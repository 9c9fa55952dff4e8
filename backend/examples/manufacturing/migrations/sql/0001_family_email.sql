-- The email family: campaigns, emails, every delivery attempt, and the bounce feed's results.

-- A bulk send: one template and common context for many recipients. manufacturing.send_bulk_email
-- turns its recipients into emails (and one job each) once, then sets fanned_out_at.
CREATE TABLE manufacturing.email_campaigns (
    id bigserial PRIMARY KEY,
    template text NOT NULL,
    common_context jsonb NOT NULL DEFAULT '{}',
    recipients jsonb NOT NULL,  -- [{"to_email": ..., "to_name": ..., "context": {...}}, ...]
    created_at timestamptz NOT NULL DEFAULT now(),
    fanned_out_at timestamptz
);

-- One email to one address. status is the latest outcome: queued (a job will send it), sent
-- (the server accepted it), refused (5xx at the server: never retried), bounced (accepted, then
-- reported undeliverable), skipped (the address had bounced before), failed (next_retry_at set:
-- retry_failed_emails sends it again; NULL: it gave up).
CREATE TABLE manufacturing.emails (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('normal', 'urgent', 'bulk')),
    campaign_id bigint REFERENCES manufacturing.email_campaigns (id) ON DELETE CASCADE,
    to_email text NOT NULL,
    to_name text,
    template text NOT NULL,
    context jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sent', 'refused', 'bounced', 'skipped', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_retry_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (campaign_id, to_email)
);
CREATE INDEX emails_retry_idx ON manufacturing.emails (next_retry_at) WHERE status = 'failed';
CREATE INDEX emails_to_email_idx ON manufacturing.emails (lower(to_email));

-- Every delivery attempt, with the server's answer; 'bounced' rows come from the bounce feed.
CREATE TABLE manufacturing.email_attempts (
    id bigserial PRIMARY KEY,
    email_id bigint NOT NULL REFERENCES manufacturing.emails (id) ON DELETE CASCADE,
    job_id bigint,
    attempt integer,
    status text NOT NULL CHECK (status IN ('sent', 'refused', 'bounced', 'skipped', 'failed')),
    smtp_code integer,
    smtp_answer text,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX email_attempts_email_idx ON manufacturing.email_attempts (email_id, id);

-- Bounce reports read from the feed, once each (feed_key: the report's key in the feed).
CREATE TABLE manufacturing.email_bounces (
    feed_key text PRIMARY KEY,
    address text NOT NULL,
    email_id bigint REFERENCES manufacturing.emails (id) ON DELETE SET NULL,
    status_code text,
    diagnostic text,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Addresses that bounced: later sends to them are skipped (and recorded so).
CREATE TABLE manufacturing.bounced_addresses (
    address text PRIMARY KEY CHECK (address = lower(address)),
    bounces integer NOT NULL,
    diagnostic text,
    first_bounced_at timestamptz NOT NULL DEFAULT now(),
    last_bounced_at timestamptz NOT NULL DEFAULT now()
);

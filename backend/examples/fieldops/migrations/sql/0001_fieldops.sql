-- Field operations (the Flask app's models in models.py): schedules, notifications, the audit
-- trail and PDF reports, in schema fieldops.
CREATE SCHEMA IF NOT EXISTS fieldops;

CREATE TABLE fieldops.schedules (
    id bigserial PRIMARY KEY,
    title varchar(200) NOT NULL,
    day date NOT NULL,
    assignee varchar(100) NOT NULL,
    locked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (day, title)
);
-- The nightly lock reads one day's unlocked schedules.
CREATE INDEX schedules_unlocked_day ON fieldops.schedules (day) WHERE locked_at IS NULL;

CREATE TABLE fieldops.notifications (
    id bigserial PRIMARY KEY,
    recipient varchar(100) NOT NULL,
    message varchar(500) NOT NULL,
    read_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The weekly cleanup reads read notifications by age.
CREATE INDEX notifications_read_at ON fieldops.notifications (read_at) WHERE read_at IS NOT NULL;

CREATE TABLE fieldops.audit_trail (
    id bigserial PRIMARY KEY,
    action varchar(50) NOT NULL,
    schedule_id bigint REFERENCES fieldops.schedules (id),
    actor varchar(100) NOT NULL,
    details json NOT NULL DEFAULT '{}',
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_trail_schedule ON fieldops.audit_trail (schedule_id);

CREATE TABLE fieldops.reports (
    id bigserial PRIMARY KEY,
    day_from date NOT NULL,
    day_to date NOT NULL,
    status varchar(20) NOT NULL DEFAULT 'pending',
    file_name varchar(200),
    job_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (day_from <= day_to)
);

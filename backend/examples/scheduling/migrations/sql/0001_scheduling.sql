-- The external schedule sync example (docs/examples-scheduling.md): employees and their
-- schedules, each row carrying what its sync to the external scheduling API needs. Tables live
-- in their own schema; taskhub's job tables are not touched.
--
-- IF NOT EXISTS and OR REPLACE throughout: a database where taskhub's revision 0008 made these
-- (before the example became an app) adopts them unchanged.
CREATE SCHEMA IF NOT EXISTS scheduling;

-- An employee, known to the remote API by its code (the employee number both systems share).
CREATE TABLE IF NOT EXISTS scheduling.employees (
    id bigserial PRIMARY KEY,
    code text NOT NULL UNIQUE CHECK (code ~ '^[A-Za-z0-9_.-]{1,40}$'),
    name text NOT NULL,
    email text,
    active boolean NOT NULL DEFAULT true,
    -- Bumped by every local change; synced_version is the one the remote last received.
    version integer NOT NULL DEFAULT 1,
    synced_version integer,
    sync_status text NOT NULL DEFAULT 'pending'
        CHECK (sync_status IN ('pending', 'synced', 'failed')),
    sync_error text,
    last_job_id bigint,  -- no foreign key: jobs are pruned, the row stays
    synced_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A schedule (a shift or visit) of one employee; the remote calls it an event.
CREATE TABLE IF NOT EXISTS scheduling.schedules (
    id bigserial PRIMARY KEY,
    employee_id bigint NOT NULL REFERENCES scheduling.employees (id),
    title text NOT NULL,
    starts_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    version integer NOT NULL DEFAULT 1,
    synced_version integer,
    sync_status text NOT NULL DEFAULT 'pending'
        CHECK (sync_status IN ('pending', 'synced', 'failed', 'deleted')),
    sync_error text,
    last_job_id bigint,
    synced_at timestamptz,
    -- The remote event's id and revision, once known.
    external_id text UNIQUE,
    remote_version integer,
    -- Sent as Idempotency-Key (and as the event's reference) when creating the remote event:
    -- random, so two installations never share one. create_request is the exact body of the
    -- first create attempt: every retry sends it again under the same key, until the remote's
    -- id is stored.
    idempotency_key uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    create_request jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,  -- set by a delete; the row stays to follow the remote delete
    CHECK (ends_at > starts_at)
);
CREATE INDEX IF NOT EXISTS schedules_employee_idx ON scheduling.schedules (employee_id);
CREATE INDEX IF NOT EXISTS schedules_sync_status_idx ON scheduling.schedules (sync_status, id DESC);

-- What the API shows of a row: its employee's code and the status of its latest sync job.
CREATE OR REPLACE VIEW scheduling.employee_overview AS
SELECT employee.id, employee.code, employee.name, employee.email, employee.active,
       employee.version, employee.synced_version, employee.sync_status, employee.sync_error,
       employee.synced_at, employee.last_job_id, job.status::text AS last_job_status,
       employee.created_at, employee.updated_at
  FROM scheduling.employees employee
  LEFT JOIN procrastinate_jobs job ON job.id = employee.last_job_id;

CREATE OR REPLACE VIEW scheduling.schedule_overview AS
SELECT schedule.id, schedule.employee_id, employee.code AS employee_code, schedule.title,
       schedule.starts_at, schedule.ends_at, schedule.version, schedule.synced_version,
       schedule.sync_status, schedule.sync_error, schedule.synced_at, schedule.external_id,
       schedule.last_job_id, job.status::text AS last_job_status,
       schedule.created_at, schedule.updated_at, schedule.deleted_at
  FROM scheduling.schedules schedule
  JOIN scheduling.employees employee ON employee.id = schedule.employee_id
  LEFT JOIN procrastinate_jobs job ON job.id = schedule.last_job_id;

-- The external schedule sync example (service.py), in procrastinate's format.
-- Writes bump the row's version and set it pending; the sync jobs record what the remote has.

-- scheduling_insert_employee --
-- A new employee, or nothing when the code is taken.
INSERT INTO scheduling.employees (code, name, email, active)
VALUES (%(code)s, %(name)s, %(email)s, %(active)s)
ON CONFLICT (code) DO NOTHING
RETURNING id;

-- scheduling_get_employee --
-- One employee as the API shows it.
SELECT * FROM scheduling.employee_overview WHERE id = %(employee_id)s;

-- scheduling_lock_employee --
-- The employee a change applies to, locked until the request commits.
SELECT * FROM scheduling.employees WHERE id = %(employee_id)s FOR UPDATE;

-- scheduling_employee_code --
-- Whether an employee exists (a schedule is about to point at it); locked against changes.
SELECT code FROM scheduling.employees WHERE id = %(employee_id)s FOR SHARE;

-- scheduling_update_employee --
-- A local change: a new version, waiting to be pushed.
UPDATE scheduling.employees
   SET name = %(name)s,
       email = %(email)s,
       active = %(active)s,
       version = version + 1,
       sync_status = 'pending',
       updated_at = now()
 WHERE id = %(employee_id)s;

-- scheduling_set_employee_job --
-- The job that will push the employee's latest version.
UPDATE scheduling.employees SET last_job_id = %(job_id)s WHERE id = %(employee_id)s;

-- scheduling_employee_sync_state --
-- What a sync job pushes: the employee as it is now.
SELECT id, code, name, email, active, version FROM scheduling.employees
 WHERE id = %(employee_id)s;

-- scheduling_employee_synced --
-- The remote has this version. Synced unless a newer change came meanwhile (its job follows).
UPDATE scheduling.employees
   SET synced_version = %(version)s,
       sync_status = CASE WHEN version = %(version)s THEN 'synced' ELSE sync_status END,
       sync_error = NULL,
       synced_at = now()
 WHERE id = %(employee_id)s;

-- scheduling_employee_sync_failed --
-- An attempt failed. Failed for good only on the last attempt of the latest job: an older
-- job's failure leaves the row to the job after it.
UPDATE scheduling.employees
   SET sync_error = %(error)s,
       sync_status = CASE WHEN %(final)s AND last_job_id = %(job_id)s THEN 'failed'
                          ELSE sync_status END
 WHERE id = %(employee_id)s;

-- scheduling_insert_schedule --
-- A new schedule, pending its first push.
INSERT INTO scheduling.schedules (employee_id, title, starts_at, ends_at)
VALUES (%(employee_id)s, %(title)s, %(starts_at)s, %(ends_at)s)
RETURNING id;

-- scheduling_get_schedule --
-- One schedule as the API shows it (deleted ones too, to follow their remote delete).
SELECT * FROM scheduling.schedule_overview WHERE id = %(schedule_id)s;

-- scheduling_list_schedules --
-- Schedules newest first, optionally only those in one sync status.
SELECT * FROM scheduling.schedule_overview
 WHERE %(sync_status)s::text IS NULL OR sync_status = %(sync_status)s::text
 ORDER BY id DESC
 LIMIT %(limit)s;

-- scheduling_lock_schedule --
-- The schedule a change applies to, locked until the request commits.
SELECT * FROM scheduling.schedules WHERE id = %(schedule_id)s FOR UPDATE;

-- scheduling_update_schedule --
-- A reschedule or change of employee: a new version, waiting to be pushed.
UPDATE scheduling.schedules
   SET employee_id = %(employee_id)s,
       title = %(title)s,
       starts_at = %(starts_at)s,
       ends_at = %(ends_at)s,
       version = version + 1,
       sync_status = 'pending',
       updated_at = now()
 WHERE id = %(schedule_id)s;

-- scheduling_delete_schedule --
-- A delete: the row stays, marked, until its delete job has removed the remote event.
UPDATE scheduling.schedules
   SET deleted_at = now(),
       version = version + 1,
       sync_status = 'pending',
       updated_at = now()
 WHERE id = %(schedule_id)s;

-- scheduling_set_schedule_job --
-- The job that will push the schedule's latest version (or its delete).
UPDATE scheduling.schedules SET last_job_id = %(job_id)s WHERE id = %(schedule_id)s;

-- scheduling_schedule_sync_state --
-- What a sync job pushes: the schedule as it is now, with its employee.
SELECT schedule.id, schedule.version, schedule.title, schedule.starts_at, schedule.ends_at,
       schedule.external_id, schedule.remote_version, schedule.idempotency_key,
       schedule.create_request, schedule.deleted_at,
       employee.code AS employee_code, employee.name AS employee_name,
       employee.email AS employee_email, employee.active AS employee_active
  FROM scheduling.schedules schedule
  JOIN scheduling.employees employee ON employee.id = schedule.employee_id
 WHERE schedule.id = %(schedule_id)s;

-- scheduling_save_create_request --
-- The exact body of the first create attempt, committed before it is sent: every retry sends
-- it again under the same Idempotency-Key, so the remote can recognise it.
UPDATE scheduling.schedules SET create_request = %(request)s WHERE id = %(schedule_id)s;

-- scheduling_schedule_claimed --
-- The remote event's id, stored as soon as it is known; no create is sent again after this.
UPDATE scheduling.schedules
   SET external_id = %(external_id)s,
       remote_version = %(remote_version)s,
       create_request = NULL
 WHERE id = %(schedule_id)s;

-- scheduling_schedule_synced --
-- The remote event has this version of the row. Synced unless a newer change (or a delete)
-- came meanwhile: its own job follows.
UPDATE scheduling.schedules
   SET remote_version = %(remote_version)s,
       synced_version = %(version)s,
       sync_status = CASE WHEN version = %(version)s THEN 'synced' ELSE sync_status END,
       sync_error = NULL,
       synced_at = now()
 WHERE id = %(schedule_id)s;

-- scheduling_schedule_remote_deleted --
-- The remote event is gone (or never existed): the delete is complete.
UPDATE scheduling.schedules
   SET sync_status = 'deleted',
       synced_version = version,
       sync_error = NULL,
       synced_at = now(),
       create_request = NULL
 WHERE id = %(schedule_id)s;

-- scheduling_schedule_sync_failed --
-- An attempt failed. Failed for good only on the last attempt of the latest job.
UPDATE scheduling.schedules
   SET sync_error = %(error)s,
       sync_status = CASE WHEN %(final)s AND last_job_id = %(job_id)s THEN 'failed'
                          ELSE sync_status END
 WHERE id = %(schedule_id)s;

-- scheduling_upsert_remote_events --
-- One page of the remote's events, folded into the local rows. Known events (by external_id)
-- take the remote's fields when the remote changed them, unless the row has a local change
-- waiting to be pushed (the push wins) or was deleted. Unknown events of known employees are
-- inserted, except those whose reference is one of our own idempotency keys (our own creates,
-- which their sync or delete job claims). Events of unknown employees are counted and left.
WITH remote AS (
    SELECT event.*, employee.id AS employee_id,
           CASE WHEN event.reference ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                THEN event.reference::uuid END AS reference_key
      FROM jsonb_to_recordset(%(events)s::jsonb) AS event (
               id text, employee_code text, title text, starts_at timestamptz,
               ends_at timestamptz, reference text, version integer)
      LEFT JOIN scheduling.employees employee ON employee.code = event.employee_code
     WHERE event.ends_at > event.starts_at
),
updated AS (
    UPDATE scheduling.schedules schedule
       SET employee_id = remote.employee_id,
           title = remote.title,
           starts_at = remote.starts_at,
           ends_at = remote.ends_at,
           remote_version = remote.version,
           updated_at = now(),
           synced_at = now()
      FROM remote
     WHERE schedule.external_id = remote.id
       AND remote.employee_id IS NOT NULL
       AND schedule.deleted_at IS NULL
       AND schedule.sync_status = 'synced'
       AND schedule.version = schedule.synced_version
       AND schedule.remote_version IS DISTINCT FROM remote.version
    RETURNING schedule.id
),
inserted AS (
    INSERT INTO scheduling.schedules (
        employee_id, title, starts_at, ends_at, external_id, remote_version,
        synced_version, sync_status, synced_at)
    SELECT remote.employee_id, remote.title, remote.starts_at, remote.ends_at, remote.id,
           remote.version, 1, 'synced', now()
      FROM remote
     WHERE remote.employee_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM scheduling.schedules known
                        WHERE known.external_id = remote.id
                           OR known.idempotency_key = remote.reference_key)
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM jsonb_array_elements(%(events)s::jsonb)) AS seen,
       (SELECT count(*) FROM updated) AS updated,
       (SELECT count(*) FROM inserted) AS inserted,
       (SELECT count(*) FROM remote WHERE remote.employee_id IS NULL) AS unknown_employee;

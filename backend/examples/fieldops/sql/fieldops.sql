-- Field operations' tasks (tasks.py, service.py): what the workers read and write.

-- fieldops_cleanup_notifications --
-- Read notifications past the retention; unread ones stay whatever their age.
DELETE FROM fieldops.notifications
 WHERE read_at IS NOT NULL AND read_at < %(before)s;

-- fieldops_lock_day --
-- Lock one day's unlocked schedules and write one audit row per lock, in one statement:
-- a schedule locked by a concurrent run is skipped (already locked), never audited twice.
WITH locked AS (
    UPDATE fieldops.schedules
       SET locked_at = now()
     WHERE day = %(day)s AND locked_at IS NULL
 RETURNING id, day
)
INSERT INTO fieldops.audit_trail (action, schedule_id, actor, details)
SELECT 'schedule_locked', id, 'fieldops.auto_lock_yesterday_schedules',
       json_build_object('day', day, 'job_id', %(job_id)s::bigint)
  FROM locked
RETURNING schedule_id;

-- fieldops_add_notification --
-- A message for a schedule's assignee.
INSERT INTO fieldops.notifications (recipient, message)
SELECT assignee, 'You are on duty: ' || title || ' on ' || day
  FROM fieldops.schedules WHERE id = %(schedule_id)s
RETURNING id;

-- fieldops_get_report --
-- The report a job writes, locked so a second run of the job waits for the first.
SELECT id, day_from, day_to, status, file_name FROM fieldops.reports
 WHERE id = %(report_id)s FOR UPDATE;

-- fieldops_report_rows --
-- The schedules a report lists, in day order.
SELECT day, title, assignee, locked_at IS NOT NULL AS locked
  FROM fieldops.schedules
 WHERE day BETWEEN %(day_from)s AND %(day_to)s
 ORDER BY day, title;

-- fieldops_finish_report --
-- The PDF is written: where it is.
UPDATE fieldops.reports SET status = 'ready', file_name = %(file_name)s
 WHERE id = %(report_id)s;

-- fieldops_report --
-- A report as the API shows it.
SELECT id, day_from, day_to, status, file_name, job_id FROM fieldops.reports
 WHERE id = %(report_id)s;

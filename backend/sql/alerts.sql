-- Alert events (taskhub.alert_events): named queries of backend/alerts.py.

-- insert_alert_event --
-- One alert, in the caller's transaction: it commits with what it reports.
INSERT INTO taskhub.alert_events (kind, severity, message, details, job_id)
VALUES (%(kind)s, %(severity)s, %(message)s, %(details)s, %(job_id)s)
RETURNING *;

-- list_alert_events --
-- Recent alerts, newest first, optionally of one kind.
SELECT * FROM taskhub.alert_events
 WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)
 ORDER BY raised_at DESC, id DESC
 LIMIT %(limit)s;

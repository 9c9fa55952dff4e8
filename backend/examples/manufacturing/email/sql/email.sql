-- The email family (service.py, delivery.py, bounces.py, tasks.py): named queries, in
-- procrastinate's format.

-- email_insert --
-- A new email, queued: its job is deferred in the same transaction.
INSERT INTO manufacturing.emails (kind, to_email, to_name, template, context)
VALUES (%(kind)s, %(to_email)s, %(to_name)s, %(template)s, %(context)s)
RETURNING id;

-- email_insert_campaign --
-- A new campaign; manufacturing.send_bulk_email turns its recipients into emails.
INSERT INTO manufacturing.email_campaigns (template, common_context, recipients)
VALUES (%(template)s, %(common_context)s, %(recipients)s)
RETURNING id;

-- email_fan_out_campaign --
-- One bulk email per distinct recipient of a campaign not fanned out yet, the recipient's
-- context over the common one; marks the campaign fanned out in the same statement, so a
-- second run (a retry, a duplicate job) creates nothing.
WITH campaign AS (
    UPDATE manufacturing.email_campaigns
       SET fanned_out_at = now()
     WHERE id = %(campaign_id)s AND fanned_out_at IS NULL
    RETURNING *
)
INSERT INTO manufacturing.emails (kind, campaign_id, to_email, to_name, template, context)
SELECT 'bulk', campaign.id, recipient.to_email, recipient.to_name, campaign.template,
       campaign.common_context || COALESCE(recipient.context, '{}'::jsonb)
  FROM campaign,
       jsonb_to_recordset(campaign.recipients)
           AS recipient(to_email text, to_name text, context jsonb)
ON CONFLICT (campaign_id, to_email) DO NOTHING
RETURNING id;

-- email_campaign --
-- A campaign's row (without its recipient list) and how its emails stand.
SELECT campaign.id, campaign.template, campaign.common_context, campaign.created_at,
       campaign.fanned_out_at, jsonb_array_length(campaign.recipients) AS recipients,
       COALESCE((SELECT jsonb_object_agg(status, n)
                   FROM (SELECT status, count(*) AS n FROM manufacturing.emails
                          WHERE campaign_id = campaign.id GROUP BY status) counts),
                '{}'::jsonb) AS statuses
  FROM manufacturing.email_campaigns campaign
 WHERE campaign.id = %(campaign_id)s;

-- email_to_send --
-- The email a send job is about, and whether its address bounced before.
SELECT email.id, email.kind, email.status, email.to_email, email.to_name, email.template,
       email.context, bounced.last_bounced_at AS bounced_at,
       bounced.diagnostic AS bounce_diagnostic
  FROM manufacturing.emails email
  LEFT JOIN manufacturing.bounced_addresses bounced ON bounced.address = lower(email.to_email)
 WHERE email.id = %(email_id)s;

-- email_record_attempt --
-- One attempt's row and the email's new status together. A retriable failure is due for
-- retry_failed_emails at once (its 5-minute cadence is the backoff) until max_attempts.
WITH email AS (
    UPDATE manufacturing.emails
       SET status = %(status)s::text,
           attempts = attempts + 1,
           next_retry_at = CASE
               WHEN %(status)s::text = 'failed' AND %(retriable)s::boolean
                    AND attempts + 1 < %(max_attempts)s::integer
               THEN now() END,
           updated_at = now()
     WHERE id = %(email_id)s
    RETURNING id, attempts
)
INSERT INTO manufacturing.email_attempts (email_id, job_id, attempt, status, smtp_code,
                                          smtp_answer, started_at)
SELECT email.id, %(job_id)s, email.attempts, %(status)s::text, %(smtp_code)s,
       %(smtp_answer)s, %(started_at)s
  FROM email
RETURNING id, attempt;

-- email_requeue_failed --
-- Failed emails due for another attempt, queued again (their jobs are deferred in the same
-- transaction); rows another sweep holds are left to it.
UPDATE manufacturing.emails email
   SET status = 'queued', next_retry_at = NULL, updated_at = now()
  FROM (SELECT id FROM manufacturing.emails
         WHERE status = 'failed' AND next_retry_at <= now()
         ORDER BY next_retry_at, id
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED) due
 WHERE email.id = due.id
RETURNING email.id, email.kind;

-- email_record_bounces --
-- Bounce reports from the feed, each once (by its feed key): the addresses marked bounced,
-- and the emails they reported (by the quoted Message-ID) set to bounced with an attempt row
-- carrying the report's status and diagnostic.
WITH report AS (
    SELECT * FROM jsonb_to_recordset(%(reports)s::jsonb) AS report(
        feed_key text, address text, email_id bigint, status_code text, smtp_code integer,
        diagnostic text)
), new AS (
    INSERT INTO manufacturing.email_bounces (feed_key, address, email_id, status_code,
                                             diagnostic)
    SELECT report.feed_key, lower(report.address), email.id, report.status_code,
           report.diagnostic
      FROM report
      LEFT JOIN manufacturing.emails email
             ON email.id = report.email_id AND lower(email.to_email) = lower(report.address)
    ON CONFLICT (feed_key) DO NOTHING
    RETURNING *
), marked AS (
    INSERT INTO manufacturing.bounced_addresses AS known (address, bounces, diagnostic)
    SELECT address, count(*), (array_agg(diagnostic ORDER BY feed_key DESC))[1]
      FROM new
     GROUP BY address
    ON CONFLICT (address) DO UPDATE
       SET bounces = known.bounces + EXCLUDED.bounces,
           diagnostic = EXCLUDED.diagnostic,
           last_bounced_at = now()
    RETURNING address
), bounced AS (
    UPDATE manufacturing.emails email
       SET status = 'bounced', next_retry_at = NULL, updated_at = now()
      FROM new
     WHERE email.id = new.email_id
    RETURNING email.id
), attempts AS (
    INSERT INTO manufacturing.email_attempts (email_id, status, smtp_code, smtp_answer,
                                              started_at)
    SELECT DISTINCT ON (new.email_id) new.email_id, 'bounced', report.smtp_code,
           concat_ws(' ', new.status_code, new.diagnostic), now()
      FROM new JOIN report ON report.feed_key = new.feed_key
     WHERE new.email_id IS NOT NULL
     ORDER BY new.email_id, new.feed_key
    RETURNING id
)
SELECT (SELECT count(*) FROM new) AS reports,
       (SELECT count(*) FROM marked) AS addresses,
       (SELECT count(*) FROM bounced) AS emails;

-- email_list --
-- Emails, newest first, optionally of one campaign and one status.
SELECT id, kind, campaign_id, to_email, to_name, template, status, attempts, next_retry_at,
       created_at, updated_at
  FROM manufacturing.emails
 WHERE (%(campaign_id)s::bigint IS NULL OR campaign_id = %(campaign_id)s)
   AND (%(status)s::text IS NULL OR status = %(status)s)
 ORDER BY id DESC
 LIMIT %(limit)s;

-- email_get --
-- One email.
SELECT id, kind, campaign_id, to_email, to_name, template, status, attempts, next_retry_at,
       created_at, updated_at
  FROM manufacturing.emails
 WHERE id = %(email_id)s;

-- email_attempts --
-- An email's delivery attempts, oldest first (or every attempt of a campaign).
SELECT attempt.*
  FROM manufacturing.email_attempts attempt
  JOIN manufacturing.emails email ON email.id = attempt.email_id
 WHERE (%(email_id)s::bigint IS NULL OR attempt.email_id = %(email_id)s)
   AND (%(campaign_id)s::bigint IS NULL OR email.campaign_id = %(campaign_id)s)
 ORDER BY attempt.id;

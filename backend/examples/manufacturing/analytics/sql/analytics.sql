-- The analytics family (analytics/tasks.py, analytics/service.py): named queries, in
-- procrastinate's format. Each reads recent or active rows through an index (see
-- 0001_family_sync_analytics.sql), never every row ever written.

-- analytics_take_snapshot --
-- Open orders by status now; shipped/cancelled orders, payments and emails by the status they
-- reached in the last hour (their updated_at).
WITH open_orders AS (
    SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'matched') AS matched,
           count(*) FILTER (WHERE status = 'unmatched') AS unmatched,
           count(*) FILTER (WHERE status = 'in_production') AS in_production
      FROM manufacturing.orders
     WHERE status IN ('pending', 'matched', 'unmatched', 'in_production')
), closed_orders AS (
    SELECT count(*) FILTER (WHERE status = 'shipped') AS shipped,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled
      FROM manufacturing.orders
     WHERE status IN ('shipped', 'cancelled') AND updated_at >= now() - interval '1 hour'
), payments AS (
    SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'paid') AS paid,
           count(*) FILTER (WHERE status IN ('failed', 'declined')) AS failed
      FROM manufacturing.payments
     WHERE updated_at >= now() - interval '1 hour'
), emails AS (
    SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
           count(*) FILTER (WHERE status = 'sent') AS sent,
           count(*) FILTER (WHERE status IN ('failed', 'refused', 'bounced')) AS failed
      FROM manufacturing.emails
     WHERE updated_at >= now() - interval '1 hour'
)
INSERT INTO manufacturing.metric_snapshots
       (orders_pending, orders_matched, orders_unmatched, orders_in_production,
        orders_shipped_last_hour, orders_cancelled_last_hour, payments_pending_last_hour,
        payments_paid_last_hour, payments_failed_last_hour, emails_queued_last_hour,
        emails_sent_last_hour, emails_failed_last_hour)
SELECT open_orders.pending, open_orders.matched, open_orders.unmatched,
       open_orders.in_production, closed_orders.shipped, closed_orders.cancelled,
       payments.pending, payments.paid, payments.failed, emails.queued, emails.sent,
       emails.failed
  FROM open_orders, closed_orders, payments, emails
RETURNING *;

-- analytics_roll_dashboard --
-- The snapshots since the latest bucket's start (that bucket may have grown), rolled into
-- 5-minute buckets: open orders averaged and at their peak, the last-hour figures as the
-- bucket's latest snapshot had them. A rerun writes the same rows.
WITH since AS (
    SELECT COALESCE(max(bucket_start), '-infinity') AS bucket_start
      FROM manufacturing.dashboard_metrics
), bucketed AS (
    SELECT date_bin('5 minutes', snapshot.taken_at, timestamptz '2000-01-01 00:00Z')
               AS bucket_start,
           snapshot.orders_pending + snapshot.orders_matched + snapshot.orders_unmatched
               + snapshot.orders_in_production AS open_orders,
           snapshot.*
      FROM manufacturing.metric_snapshots snapshot, since
     WHERE snapshot.taken_at >= since.bucket_start
), rolled AS (
    SELECT bucket_start,
           count(*) AS snapshots,
           round(avg(open_orders), 2) AS open_orders_avg,
           max(open_orders) AS open_orders_max,
           (array_agg(orders_shipped_last_hour ORDER BY taken_at DESC, id DESC))[1]
               AS orders_shipped_last_hour,
           (array_agg(payments_paid_last_hour ORDER BY taken_at DESC, id DESC))[1]
               AS payments_paid_last_hour,
           (array_agg(payments_failed_last_hour ORDER BY taken_at DESC, id DESC))[1]
               AS payments_failed_last_hour,
           (array_agg(emails_sent_last_hour ORDER BY taken_at DESC, id DESC))[1]
               AS emails_sent_last_hour,
           (array_agg(emails_failed_last_hour ORDER BY taken_at DESC, id DESC))[1]
               AS emails_failed_last_hour
      FROM bucketed
     GROUP BY bucket_start
)
INSERT INTO manufacturing.dashboard_metrics AS dashboard
       (bucket_start, snapshots, open_orders_avg, open_orders_max, orders_shipped_last_hour,
        payments_paid_last_hour, payments_failed_last_hour, emails_sent_last_hour,
        emails_failed_last_hour)
SELECT * FROM rolled
ON CONFLICT (bucket_start) DO UPDATE
   SET snapshots = excluded.snapshots, open_orders_avg = excluded.open_orders_avg,
       open_orders_max = excluded.open_orders_max,
       orders_shipped_last_hour = excluded.orders_shipped_last_hour,
       payments_paid_last_hour = excluded.payments_paid_last_hour,
       payments_failed_last_hour = excluded.payments_failed_last_hour,
       emails_sent_last_hour = excluded.emails_sent_last_hour,
       emails_failed_last_hour = excluded.emails_failed_last_hour,
       updated_at = now()
RETURNING bucket_start;

-- analytics_prune_snapshots --
-- Snapshots older than a day (rolled into their buckets by then: the rollup runs every 5 min).
DELETE FROM manufacturing.metric_snapshots WHERE taken_at < now() - interval '1 day';

-- analytics_prune_buckets --
-- Buckets older than TASKHUB_MANUFACTURING_MONITORING_RETENTION_DAYS (by their primary key).
DELETE FROM manufacturing.dashboard_metrics
 WHERE bucket_start < now() - make_interval(days => %(days)s);

-- analytics_customer_activity --
-- Rebuild manufacturing.customer_activity for %(ended)s: every customer (by lower-cased email)
-- who placed an order, had one cancelled or had a payment settle in the 7 days before; their
-- bounced emails counted alongside. The segment rule (first that holds):
--   at_risk: 2+ failed or declined payments, a bounced email, or 2+ cancelled orders in 7 days;
--   active:  an order placed in 7 days;
--   quiet:   otherwise (only payments or cancellations, no new order).
-- Customers without activity in 7 days lose their row.
WITH bounds AS (
    SELECT %(ended)s::timestamptz AS ended,
           %(ended)s::timestamptz - interval '6 hours' AS since_6h,
           %(ended)s::timestamptz - interval '7 days' AS since_7d
), orders AS (
    SELECT lower(ord.customer_email) AS customer_email,
           count(*) FILTER (WHERE ord.created_at >= bounds.since_6h) AS orders_6h,
           count(*) FILTER (WHERE ord.created_at >= bounds.since_7d) AS orders_7d,
           count(*) FILTER (WHERE ord.status = 'cancelled' AND ord.updated_at >= bounds.since_7d)
               AS orders_cancelled_7d,
           max(ord.created_at) FILTER (WHERE ord.created_at >= bounds.since_7d) AS last_order_at
      FROM manufacturing.orders ord, bounds
     WHERE (ord.created_at >= bounds.since_7d AND ord.created_at < bounds.ended)
        OR (ord.status = 'cancelled' AND ord.updated_at >= bounds.since_7d
            AND ord.updated_at < bounds.ended)
     GROUP BY 1
), payments AS (
    SELECT lower(ord.customer_email) AS customer_email,
           count(*) FILTER (WHERE payment.status = 'paid') AS payments_paid_7d,
           count(*) FILTER (WHERE payment.status IN ('failed', 'declined')) AS payments_failed_7d
      FROM manufacturing.payments payment
      JOIN manufacturing.orders ord ON ord.id = payment.order_id, bounds
     WHERE payment.updated_at >= bounds.since_7d AND payment.updated_at < bounds.ended
       AND payment.status IN ('paid', 'failed', 'declined')
     GROUP BY 1
), customers AS (
    SELECT customer_email,
           COALESCE(orders.orders_6h, 0) AS orders_6h,
           COALESCE(orders.orders_7d, 0) AS orders_7d,
           COALESCE(orders.orders_cancelled_7d, 0) AS orders_cancelled_7d,
           COALESCE(payments.payments_paid_7d, 0) AS payments_paid_7d,
           COALESCE(payments.payments_failed_7d, 0) AS payments_failed_7d,
           orders.last_order_at
      FROM orders FULL JOIN payments USING (customer_email)
), scored AS (
    SELECT customers.*,
           (SELECT count(*)
              FROM manufacturing.emails email, bounds
             WHERE lower(email.to_email) = customers.customer_email
               AND email.status = 'bounced'
               AND email.updated_at >= bounds.since_7d AND email.updated_at < bounds.ended)
               AS emails_bounced_7d
      FROM customers
), upserted AS (
    INSERT INTO manufacturing.customer_activity AS activity
           (customer_email, orders_6h, orders_7d, orders_cancelled_7d, payments_paid_7d,
            payments_failed_7d, emails_bounced_7d, last_order_at, segment, analyzed_at)
    SELECT customer_email, orders_6h, orders_7d, orders_cancelled_7d, payments_paid_7d,
           payments_failed_7d, emails_bounced_7d, last_order_at,
           CASE WHEN payments_failed_7d >= 2 OR emails_bounced_7d > 0
                     OR orders_cancelled_7d >= 2 THEN 'at_risk'
                WHEN orders_7d > 0 THEN 'active'
                ELSE 'quiet' END,
           %(ended)s
      FROM scored
    ON CONFLICT (customer_email) DO UPDATE
       SET orders_6h = excluded.orders_6h, orders_7d = excluded.orders_7d,
           orders_cancelled_7d = excluded.orders_cancelled_7d,
           payments_paid_7d = excluded.payments_paid_7d,
           payments_failed_7d = excluded.payments_failed_7d,
           emails_bounced_7d = excluded.emails_bounced_7d,
           last_order_at = excluded.last_order_at, segment = excluded.segment,
           analyzed_at = excluded.analyzed_at
    RETURNING segment
), removed AS (
    DELETE FROM manufacturing.customer_activity
     WHERE customer_email NOT IN (SELECT customer_email FROM customers)
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted) AS customers,
       (SELECT count(*) FROM upserted WHERE segment = 'at_risk') AS at_risk,
       (SELECT count(*) FROM upserted WHERE segment = 'active') AS active,
       (SELECT count(*) FROM upserted WHERE segment = 'quiet') AS quiet,
       (SELECT count(*) FROM removed) AS removed;

-- analytics_day_kpis --
-- The KPIs of one UTC day, from the live tables: orders created, orders that reached shipped
-- or cancelled (by their last change), payments paid (by paid_at) and their revenue per
-- currency, payments failed or declined, and email attempts by outcome (by when they ended).
WITH bounds AS (
    SELECT %(day)s::date::timestamp AT TIME ZONE 'UTC' AS day_start,
           (%(day)s::date + 1)::timestamp AT TIME ZONE 'UTC' AS day_end
)
SELECT %(day)s::date AS day,
       (SELECT count(*) FROM manufacturing.orders ord
         WHERE ord.created_at >= day_start AND ord.created_at < day_end) AS orders_created,
       (SELECT count(*) FROM manufacturing.orders ord
         WHERE ord.status = 'shipped' AND ord.updated_at >= day_start
           AND ord.updated_at < day_end) AS orders_shipped,
       (SELECT count(*) FROM manufacturing.orders ord
         WHERE ord.status = 'cancelled' AND ord.updated_at >= day_start
           AND ord.updated_at < day_end) AS orders_cancelled,
       (SELECT count(*) FROM manufacturing.payments payment
         WHERE payment.paid_at >= day_start AND payment.paid_at < day_end) AS payments_paid,
       (SELECT count(*) FROM manufacturing.payments payment
         WHERE payment.status IN ('failed', 'declined') AND payment.updated_at >= day_start
           AND payment.updated_at < day_end) AS payments_failed,
       (SELECT COALESCE(jsonb_object_agg(currency, cents ORDER BY currency), '{}')
          FROM (SELECT payment.currency, sum(payment.amount_cents) AS cents
                  FROM manufacturing.payments payment
                 WHERE payment.paid_at >= day_start AND payment.paid_at < day_end
                 GROUP BY payment.currency) AS revenue) AS revenue_cents,
       (SELECT count(*) FROM manufacturing.email_attempts attempt
         WHERE attempt.status = 'sent' AND attempt.finished_at >= day_start
           AND attempt.finished_at < day_end) AS emails_sent,
       (SELECT count(*) FROM manufacturing.email_attempts attempt
         WHERE attempt.status IN ('failed', 'refused') AND attempt.finished_at >= day_start
           AND attempt.finished_at < day_end) AS emails_failed,
       (SELECT count(*) FROM manufacturing.email_attempts attempt
         WHERE attempt.status = 'bounced' AND attempt.finished_at >= day_start
           AND attempt.finished_at < day_end) AS emails_bounced
  FROM bounds;

-- analytics_save_day --
-- The day's KPIs and report: a rerun for the same day replaces them.
INSERT INTO manufacturing.daily_kpis AS kpis
       (day, orders_created, orders_shipped, orders_cancelled, payments_paid, payments_failed,
        revenue_cents, emails_sent, emails_failed, emails_bounced, report_csv, job_id)
VALUES (%(day)s, %(orders_created)s, %(orders_shipped)s, %(orders_cancelled)s,
        %(payments_paid)s, %(payments_failed)s, %(revenue_cents)s, %(emails_sent)s,
        %(emails_failed)s, %(emails_bounced)s, %(report_csv)s, %(job_id)s)
ON CONFLICT (day) DO UPDATE
   SET orders_created = excluded.orders_created, orders_shipped = excluded.orders_shipped,
       orders_cancelled = excluded.orders_cancelled, payments_paid = excluded.payments_paid,
       payments_failed = excluded.payments_failed, revenue_cents = excluded.revenue_cents,
       emails_sent = excluded.emails_sent, emails_failed = excluded.emails_failed,
       emails_bounced = excluded.emails_bounced, report_csv = excluded.report_csv,
       job_id = excluded.job_id, generated_at = now()
RETURNING day, generated_at;

-- analytics_list_kpis --
-- The latest days' KPIs, newest first (without their reports).
SELECT day, orders_created, orders_shipped, orders_cancelled, payments_paid, payments_failed,
       revenue_cents, emails_sent, emails_failed, emails_bounced, generated_at
  FROM manufacturing.daily_kpis
 ORDER BY day DESC
 LIMIT %(limit)s;

-- analytics_list_reports --
SELECT day, generated_at, octet_length(report_csv) AS size_bytes
  FROM manufacturing.daily_kpis
 ORDER BY day DESC
 LIMIT %(limit)s;

-- analytics_get_report --
SELECT day, report_csv FROM manufacturing.daily_kpis WHERE day = %(day)s;

-- The order family (service.py, tasks.py, matching.py): named queries, in procrastinate's
-- format. Days are UTC dates: "today" is (now() AT TIME ZONE 'UTC')::date.

-- orders_create --
-- A new order, pending: the caller defers its match job in the same transaction.
INSERT INTO manufacturing.orders (customer_name, customer_email, product, quantity, due_date)
VALUES (%(customer_name)s, %(customer_email)s, %(product)s, %(quantity)s, %(due_date)s)
RETURNING *;

-- orders_set_jobs --
-- The jobs that will match orders (two arrays, pairwise), in one statement.
UPDATE manufacturing.orders ord
   SET job_id = pair.job_id
  FROM unnest(%(order_ids)s::bigint[], %(job_ids)s::bigint[]) AS pair (order_id, job_id)
 WHERE ord.id = pair.order_id;

-- orders_get --
SELECT * FROM manufacturing.orders WHERE id = %(order_id)s;

-- orders_lock --
-- The order, locked until the transaction ends: its matcher and a status change take turns.
SELECT ord.*, line.name AS line_name
  FROM manufacturing.orders ord
  LEFT JOIN manufacturing.production_lines line ON line.id = ord.line_id
 WHERE ord.id = %(order_id)s
   FOR UPDATE OF ord;

-- orders_list --
-- Newest first; a status narrows it.
SELECT *
  FROM manufacturing.orders
 WHERE %(status)s::text IS NULL OR status = %(status)s
 ORDER BY id DESC
 LIMIT %(limit)s;

-- orders_events --
SELECT * FROM manufacturing.order_events WHERE order_id = %(order_id)s ORDER BY id;

-- orders_lock_lines --
-- The active lines making the product, locked in id order (so two matchers never deadlock):
-- a second matcher of the same product waits here, and its next statement sees the first
-- one's booking. Locking in the booking statement itself would not do: under READ COMMITTED a
-- statement keeps the snapshot it started with, bookings committed while it waited included.
SELECT id
  FROM manufacturing.production_lines
 WHERE product = %(product)s AND active
 ORDER BY id
   FOR UPDATE;

-- orders_book_capacity --
-- The matching rule: the active line making the product with the earliest day from today up
-- to the due date whose free capacity (daily capacity minus the day's bookings) holds the
-- quantity; on a tie, the lowest line id. Booked in the same statement; no row: no room.
WITH candidate AS (
    SELECT line.id AS line_id, series.day::date AS day
      FROM manufacturing.production_lines line
     CROSS JOIN generate_series((now() AT TIME ZONE 'UTC')::date, %(due_date)s::date,
                                interval '1 day') AS series (day)
     WHERE line.product = %(product)s
       AND line.active
       AND line.daily_capacity >= %(quantity)s
       AND line.daily_capacity - (SELECT COALESCE(sum(booking.quantity), 0)
                                    FROM manufacturing.line_bookings booking
                                   WHERE booking.line_id = line.id
                                     AND booking.day = series.day::date) >= %(quantity)s
     ORDER BY series.day, line.id
     LIMIT 1
)
INSERT INTO manufacturing.line_bookings (order_id, line_id, day, quantity)
SELECT %(order_id)s, candidate.line_id, candidate.day, %(quantity)s
  FROM candidate
RETURNING *;

-- orders_set_match --
-- The matcher's verdict: matched on a line and day, or unmatched (line and day cleared).
UPDATE manufacturing.orders ord
   SET status = %(status)s,
       line_id = %(line_id)s,
       production_date = %(production_date)s,
       matched_at = CASE WHEN %(status)s = 'matched' THEN now() END,
       match_attempts = ord.match_attempts + 1,
       updated_at = now()
 WHERE ord.id = %(order_id)s
RETURNING ord.*,
          (SELECT name FROM manufacturing.production_lines WHERE id = ord.line_id) AS line_name;

-- orders_set_status --
-- A status change by an operator (in_production, shipped, cancelled).
UPDATE manufacturing.orders ord
   SET status = %(status)s, updated_at = now()
 WHERE ord.id = %(order_id)s
RETURNING ord.*,
          (SELECT name FROM manufacturing.production_lines WHERE id = ord.line_id) AS line_name;

-- orders_release_capacity --
-- A cancelled order gives its line-day back.
DELETE FROM manufacturing.line_bookings WHERE order_id = %(order_id)s;

-- orders_record_event --
INSERT INTO manufacturing.order_events
       (order_id, from_status, to_status, line_id, production_date, note, job_id, email_id)
VALUES (%(order_id)s, %(from_status)s, %(to_status)s, %(line_id)s, %(production_date)s,
        %(note)s, %(job_id)s, %(email_id)s)
RETURNING *;

-- orders_take_waiting --
-- One batch for the 15-minute sweep: pending or unmatched orders not yet past due whose match
-- job is neither waiting nor running (it was lost, or it found no room). SKIP LOCKED: two
-- sweeps never take the same order; the caller defers their jobs in the same transaction.
SELECT ord.id
  FROM manufacturing.orders ord
 WHERE ord.status IN ('pending', 'unmatched')
   AND ord.due_date >= (now() AT TIME ZONE 'UTC')::date
   AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs job
                    WHERE job.id = ord.job_id AND job.status IN ('todo', 'doing'))
   AND ord.id > %(after)s
 ORDER BY ord.id
 LIMIT %(limit)s
   FOR UPDATE OF ord SKIP LOCKED;

-- orders_take_reminders --
-- One batch of orders in flight due within the window and not reminded within the interval:
-- stamped reminded now (the caller queues their emails in the same transaction).
WITH due AS (
    SELECT ord.id
      FROM manufacturing.orders ord
     WHERE ord.status IN ('matched', 'in_production')
       AND ord.due_date BETWEEN (now() AT TIME ZONE 'UTC')::date
                            AND (now() AT TIME ZONE 'UTC')::date + %(within_days)s::integer
       AND (ord.reminded_at IS NULL OR ord.reminded_at < now() - %(every)s::interval)
     ORDER BY ord.due_date, ord.id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE manufacturing.orders ord
   SET reminded_at = now()
  FROM due
 WHERE ord.id = due.id
RETURNING ord.*,
          (SELECT name FROM manufacturing.production_lines WHERE id = ord.line_id) AS line_name;

-- lines_create --
INSERT INTO manufacturing.production_lines (name, product, daily_capacity, active)
VALUES (%(name)s, %(product)s, %(daily_capacity)s, %(active)s)
ON CONFLICT (name) DO NOTHING
RETURNING *;

-- lines_list --
SELECT * FROM manufacturing.production_lines ORDER BY id;

-- lines_booked --
-- A line's bookings per day from today on, for reading its free capacity.
SELECT day, sum(quantity)::integer AS booked, count(*)::integer AS orders
  FROM manufacturing.line_bookings
 WHERE line_id = %(line_id)s AND day >= (now() AT TIME ZONE 'UTC')::date
 GROUP BY day
 ORDER BY day;

-- The order family: production lines and their daily capacity, customers' orders, the
-- capacity each matched order books on one line for one day, and every status change.
-- Days are UTC dates. A sweep reads the active rows only: the partial indexes below cover
-- orders still waiting for a line (pending, unmatched) and orders in flight (matched,
-- in_production), never the shipped or cancelled ones.

-- A line makes one product, up to daily_capacity units a day; only active lines get orders.
CREATE TABLE manufacturing.production_lines (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name <> ''),
    product text NOT NULL CHECK (product <> ''),
    daily_capacity integer NOT NULL CHECK (daily_capacity > 0),
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX production_lines_product_idx
    ON manufacturing.production_lines (product, id) WHERE active;

-- An order. status: pending (its match job waits), matched (booked on line_id for
-- production_date), unmatched (no line had room before due_date: the 15-minute sweep tries
-- again), in_production, shipped, cancelled (both final). job_id: the latest match job (no
-- foreign key: jobs are pruned).
CREATE TABLE manufacturing.orders (
    id bigserial PRIMARY KEY,
    customer_name text NOT NULL CHECK (customer_name <> ''),
    customer_email text NOT NULL CHECK (customer_email <> ''),
    product text NOT NULL CHECK (product <> ''),
    quantity integer NOT NULL CHECK (quantity > 0),
    due_date date NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'matched', 'unmatched', 'in_production', 'shipped',
                          'cancelled')),
    line_id bigint REFERENCES manufacturing.production_lines (id),
    production_date date,
    job_id bigint,
    match_attempts integer NOT NULL DEFAULT 0 CHECK (match_attempts >= 0),
    matched_at timestamptz,
    reminded_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((line_id IS NULL) = (production_date IS NULL)),
    CHECK (status NOT IN ('matched', 'in_production') OR line_id IS NOT NULL)
);
-- The 15-minute sweep: orders waiting for a line, oldest (lowest id) first.
CREATE INDEX orders_waiting_idx
    ON manufacturing.orders (id) WHERE status IN ('pending', 'unmatched');
-- The reminders: orders in flight by due date.
CREATE INDEX orders_in_flight_due_idx
    ON manufacturing.orders (due_date) WHERE status IN ('matched', 'in_production');
CREATE INDEX orders_line_idx ON manufacturing.orders (line_id) WHERE line_id IS NOT NULL;

-- The capacity an order takes: quantity units on one line on one day, at most one booking per
-- order. A line-day's free capacity is daily_capacity minus the sum of its bookings; matching
-- locks the product's lines first, so two matches never both take the last units.
CREATE TABLE manufacturing.line_bookings (
    order_id bigint PRIMARY KEY REFERENCES manufacturing.orders (id) ON DELETE CASCADE,
    line_id bigint NOT NULL REFERENCES manufacturing.production_lines (id),
    day date NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    booked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX line_bookings_line_day_idx ON manufacturing.line_bookings (line_id, day);

-- Every status change of an order, with the email that told the customer (if any).
CREATE TABLE manufacturing.order_events (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES manufacturing.orders (id) ON DELETE CASCADE,
    from_status text,
    to_status text NOT NULL,
    line_id bigint,
    production_date date,
    note text,
    job_id bigint,
    email_id bigint,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_events_order_idx ON manufacturing.order_events (order_id, id);

-- The payment family: payments (one charge each at the provider), their invoices, and the
-- history of reconciliations against the provider's list of charges. Amounts in integer cents.

-- One payment of an order. The provider is asked with idempotency_key (derived from the id,
-- never reused), so however often a job runs it, the provider charges once; charge_id is the
-- provider's charge, written in the same transaction that sets status 'paid'. status: pending
-- (a job will charge it), paid, failed (the last attempt could not reach the provider or was
-- refused; the job may still retry, and retry_failed_payments queues it again once the job has
-- given up), declined (the provider declined the card: final).
CREATE TABLE manufacturing.payments (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL CHECK (order_id > 0),
    user_id bigint NOT NULL CHECK (user_id > 0),
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    payment_method_id text NOT NULL CHECK (payment_method_id <> ''),
    idempotency_key text GENERATED ALWAYS AS ('payment-' || id) STORED UNIQUE,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'paid', 'failed', 'declined')),
    charge_id text UNIQUE,
    job_id bigint,  -- the latest job charging it (no foreign key: jobs are pruned)
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    retry_rounds integer NOT NULL DEFAULT 0 CHECK (retry_rounds >= 0),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    paid_at timestamptz,
    CHECK ((status = 'paid') = (charge_id IS NOT NULL AND paid_at IS NOT NULL))
);
CREATE INDEX payments_order_idx ON manufacturing.payments (order_id);
CREATE INDEX payments_failed_idx ON manufacturing.payments (updated_at) WHERE status = 'failed';

-- The invoice of a paid payment: at most one each (manufacturing.generate_invoice may run twice).
CREATE TABLE manufacturing.invoices (
    id bigserial PRIMARY KEY,
    payment_id bigint NOT NULL UNIQUE REFERENCES manufacturing.payments (id),
    order_id bigint NOT NULL,
    number text NOT NULL UNIQUE,
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    issued_at timestamptz NOT NULL DEFAULT now()
);

-- One row per reconciliation run: what was compared and every mismatch found.
CREATE TABLE manufacturing.payment_reconciliations (
    id bigserial PRIMARY KEY,
    job_id bigint,
    provider_charges integer NOT NULL CHECK (provider_charges >= 0),
    local_payments integer NOT NULL CHECK (local_payments >= 0),
    in_flight integer NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    mismatches jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(mismatches) = 'array'),
    mismatch_count integer GENERATED ALWAYS AS (jsonb_array_length(mismatches)) STORED,
    checked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_reconciliations_checked_idx
    ON manufacturing.payment_reconciliations (checked_at DESC);

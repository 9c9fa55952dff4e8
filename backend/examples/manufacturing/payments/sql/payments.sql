-- The payment family (service.py, tasks.py): named queries, in procrastinate's format.

-- payments_create --
-- A new payment, pending: the caller defers its job in the same transaction.
INSERT INTO manufacturing.payments (order_id, user_id, amount_cents, currency, payment_method_id)
VALUES (%(order_id)s, %(user_id)s, %(amount_cents)s, %(currency)s, %(payment_method_id)s)
RETURNING *;

-- payments_set_jobs --
-- The jobs that will charge payments (two arrays, pairwise), in one statement.
UPDATE manufacturing.payments payment
   SET job_id = pair.job_id
  FROM unnest(%(payment_ids)s::bigint[], %(job_ids)s::bigint[]) AS pair (payment_id, job_id)
 WHERE payment.id = pair.payment_id;

-- payments_get --
SELECT * FROM manufacturing.payments WHERE id = %(payment_id)s;

-- payments_start_attempt --
-- An attempt of a job on a payment: counted, and the job recorded as the payment's latest.
UPDATE manufacturing.payments
   SET attempts = attempts + 1, job_id = %(job_id)s, updated_at = now()
 WHERE id = %(payment_id)s
RETURNING *;

-- payments_mark_paid --
-- The provider's charge, recorded. A payment already paid keeps its charge (a second job on
-- the same payment gets the same charge back from the provider, so nothing differs).
UPDATE manufacturing.payments
   SET status = 'paid', charge_id = %(charge_id)s, paid_at = now(), last_error = NULL,
       updated_at = now()
 WHERE id = %(payment_id)s AND status <> 'paid'
RETURNING *;

-- payments_mark_failed --
-- An attempt that did not charge: failed (worth another try) or declined (final). A payment
-- paid meanwhile stays paid.
UPDATE manufacturing.payments
   SET status = %(status)s, last_error = %(error)s, updated_at = now()
 WHERE id = %(payment_id)s AND status <> 'paid'
RETURNING *;

-- payments_requeue_failed --
-- Failed payments whose job has given up (it is neither waiting nor running) and that have
-- rounds left: back to pending, one round more. The caller defers their jobs in the same
-- transaction. SKIP LOCKED: two sweeps never take the same payment.
WITH due AS (
    SELECT payment.id
      FROM manufacturing.payments payment
     WHERE payment.status = 'failed'
       AND payment.retry_rounds < %(max_rounds)s
       AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs job
                        WHERE job.id = payment.job_id AND job.status IN ('todo', 'doing'))
     ORDER BY payment.updated_at, payment.id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE manufacturing.payments payment
   SET status = 'pending', retry_rounds = payment.retry_rounds + 1, updated_at = now()
  FROM due
 WHERE payment.id = due.id
RETURNING payment.id;

-- payments_create_invoice --
-- The invoice of a paid payment, once: no row when the payment is not paid or already has one.
INSERT INTO manufacturing.invoices (payment_id, order_id, number, amount_cents, currency)
SELECT payment.id, payment.order_id,
       'INV-' || to_char(payment.paid_at AT TIME ZONE 'UTC', 'YYYY') || '-'
           || lpad(payment.id::text, 8, '0'),
       payment.amount_cents, payment.currency
  FROM manufacturing.payments payment
 WHERE payment.id = %(payment_id)s AND payment.status = 'paid'
ON CONFLICT (payment_id) DO NOTHING
RETURNING *;

-- payments_get_invoice --
SELECT * FROM manufacturing.invoices WHERE payment_id = %(payment_id)s;

-- payments_compare_with_provider --
-- The provider's charges (a JSON array) against the local payments that have a charge, in one
-- full join by charge id. Every row that differs comes back, with its kind: missing_locally
-- (a charge no payment records), missing_at_provider (a payment's charge the provider does not
-- list), amount_differs (amount or currency), or in_flight: a charge whose payment is not
-- recorded yet but whose job is waiting or running (it will record it: not a mismatch).
WITH provider AS (
    SELECT *
      FROM jsonb_to_recordset(%(charges)s::jsonb)
           AS charge(id text, idempotency_key text, amount_cents bigint, currency text)
), local AS (
    SELECT id, charge_id, amount_cents, currency
      FROM manufacturing.payments
     WHERE charge_id IS NOT NULL
)
SELECT CASE
           WHEN local.id IS NULL AND pending.id IS NOT NULL THEN 'in_flight'
           WHEN local.id IS NULL THEN 'missing_locally'
           WHEN provider.id IS NULL THEN 'missing_at_provider'
           ELSE 'amount_differs'
       END AS kind,
       COALESCE(provider.id, local.charge_id) AS charge_id,
       COALESCE(local.id, pending.id) AS payment_id,
       provider.idempotency_key,
       local.amount_cents AS local_amount_cents,
       local.currency AS local_currency,
       provider.amount_cents AS provider_amount_cents,
       provider.currency AS provider_currency
  FROM provider
  FULL JOIN local ON local.charge_id = provider.id
  LEFT JOIN manufacturing.payments pending
         ON local.id IS NULL
        AND pending.idempotency_key = provider.idempotency_key
        AND pending.status IN ('pending', 'failed')
        AND EXISTS (SELECT 1 FROM procrastinate_jobs job
                     WHERE job.id = pending.job_id AND job.status IN ('todo', 'doing'))
 WHERE local.id IS NULL
    OR provider.id IS NULL
    OR (local.amount_cents, local.currency)
       IS DISTINCT FROM (provider.amount_cents, provider.currency)
 ORDER BY 2;

-- payments_count_charged --
SELECT count(*) AS charged FROM manufacturing.payments WHERE charge_id IS NOT NULL;

-- payments_record_reconciliation --
INSERT INTO manufacturing.payment_reconciliations
       (job_id, provider_charges, local_payments, in_flight, mismatches)
VALUES (%(job_id)s, %(provider_charges)s, %(local_payments)s, %(in_flight)s, %(mismatches)s)
RETURNING *;

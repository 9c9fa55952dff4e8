-- Cluster-wide rate limits: one row per run admitted, per limit key, kept one window long.
-- Unlogged: after a crash the windows start empty, which only errs on the generous side once.
CREATE UNLOGGED TABLE taskhub.rate_limit_hits (
    key text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX rate_limit_hits_key_at_idx ON taskhub.rate_limit_hits (key, at);

-- Admit one run under ``limit_key`` if fewer than ``max_runs`` were admitted in the last
-- ``window_seconds``.
-- Returns NULL when admitted, or when the next run may be admitted. Serialised per key by a
-- transaction advisory lock, so any number of workers together never exceed the limit.
CREATE FUNCTION taskhub.take_rate_limit(
    limit_key text, max_runs integer, window_seconds double precision
)
RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    window_start timestamptz;
    admitted integer;
    oldest timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('taskhub.rate_limit:' || limit_key, 0));
    window_start := clock_timestamp() - make_interval(secs => window_seconds);
    DELETE FROM taskhub.rate_limit_hits hits WHERE hits.key = limit_key AND hits.at <= window_start;
    SELECT count(*), min(hits.at) INTO admitted, oldest
      FROM taskhub.rate_limit_hits hits WHERE hits.key = limit_key;
    IF admitted < max_runs THEN
        INSERT INTO taskhub.rate_limit_hits (key) VALUES (limit_key);
        RETURN NULL;
    END IF;
    RETURN oldest + make_interval(secs => window_seconds);
END;
$$;

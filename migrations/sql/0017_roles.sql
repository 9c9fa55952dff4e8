-- Least-privilege group roles (NOLOGIN): each component's login user is granted one of them
-- (docs/operations.md, "Database roles"). Roles are cluster-wide, so they are created only when
-- missing, and a second database on the same server reuses them; the grants below are this
-- database's own. Idempotent: a DBA can run this file again with psql after creating the roles
-- (e.g. where the migrator cannot create roles), and every grant is made then.
--   taskhub_owner     owns taskhub's and procrastinate's objects; migrations run as it
--   taskhub_api       defers, reads, cancels, retries, pauses and purges queues, audits
--   taskhub_worker    fetches, finishes, heartbeats, runs maintenance (prune, rescue, stats,
--                     alerts, backups with pg_dump); no DDL
--   taskhub_readonly  reads the tables and the reporting views; writes nothing

-- Created where missing. A migrator that may not create roles gets a WARNING and the grants
-- go to the roles that exist: a one-user deployment keeps working as before.
DO $$
DECLARE
    role_name text;
    can_create boolean := (SELECT rolsuper OR rolcreaterole FROM pg_roles
                            WHERE rolname = current_user);
BEGIN
    FOREACH role_name IN ARRAY
        ARRAY['taskhub_owner', 'taskhub_api', 'taskhub_worker', 'taskhub_readonly']
    LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name);
        IF NOT can_create THEN
            RAISE WARNING 'taskhub: role % does not exist and % may not create roles; its '
                'grants are skipped. Have a superuser run "CREATE ROLE % NOLOGIN", then run '
                'migrations/sql/0017_roles.sql again', role_name, current_user, role_name;
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database's migration created it just now
        END;
    END LOOP;
END;
$$;

-- Only the roles below may call the functions that write jobs (fetching, finishing, retrying,
-- registering workers, deferring ticks...): PostgreSQL lets PUBLIC execute every new function.
-- The pure stats helpers (taskhub.stats_bounds, add_counts, sum_counts) stay open to all.
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
         WHERE (p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'procrastinate\_%')
            OR (p.pronamespace = 'taskhub'::regnamespace
                AND p.proname NOT IN ('stats_bounds', 'add_counts', 'sum_counts'))
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
    END LOOP;
END;
$$;

-- Purging a queue deletes jobs; the API may not delete jobs, so it purges through this
-- function, which deletes only the queue's waiting jobs and audits it. SECURITY DEFINER with a
-- fixed search_path: callers cannot substitute their own objects.
CREATE OR REPLACE FUNCTION taskhub.purge_queue(p_queue text, p_actor text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    purged bigint;
BEGIN
    -- A schedule's latest run forgets its waiting job (that foreign key has no cascade).
    UPDATE public.procrastinate_periodic_defers SET job_id = NULL
     WHERE job_id IN (SELECT id FROM public.procrastinate_jobs
                       WHERE queue_name = p_queue AND status = 'todo');
    -- Running jobs stay, so does one a worker is fetching now, and a schedule's job deferred
    -- since the statement above.
    WITH gone AS (
        DELETE FROM public.procrastinate_jobs job
         WHERE job.id IN (SELECT id FROM public.procrastinate_jobs
                           WHERE queue_name = p_queue AND status = 'todo'
                             FOR UPDATE SKIP LOCKED)
           AND NOT EXISTS (SELECT 1 FROM public.procrastinate_periodic_defers defer
                            WHERE defer.job_id = job.id)
     RETURNING 1
    )
    SELECT count(*) INTO purged FROM gone;
    IF purged > 0 THEN
        INSERT INTO taskhub.audit_log (actor, action, details)
        VALUES (p_actor, 'purge', jsonb_build_object('queue', p_queue, 'jobs', purged));
    END IF;
    RETURN purged;
END;
$$;
REVOKE EXECUTE ON FUNCTION taskhub.purge_queue(text, text) FROM PUBLIC;

-- Ownership moves to taskhub_owner when the migrator may hand it over (a superuser, or a
-- member of taskhub_owner); otherwise the migrator keeps owning them, with a WARNING.
DO $$
DECLARE
    item record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'taskhub_owner') THEN
        RETURN;
    END IF;
    BEGIN
        EXECUTE 'ALTER SCHEMA taskhub OWNER TO taskhub_owner';
        FOR item IN
            SELECT format('ALTER %s %s OWNER TO taskhub_owner',
                          CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'S' THEN 'SEQUENCE'
                                         ELSE 'TABLE' END,
                          c.oid::regclass) AS statement
              FROM pg_class c
             WHERE c.relkind IN ('r', 'p', 'v', 'S')
               -- a serial's sequence follows its table
               AND NOT (c.relkind = 'S' AND EXISTS (
                        SELECT 1 FROM pg_depend d
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                           AND d.deptype IN ('a', 'i')))
               AND (c.relnamespace = 'taskhub'::regnamespace
                    OR (c.relnamespace = 'public'::regnamespace
                        AND (c.relname LIKE 'procrastinate\_%' OR c.relname = 'alembic_version')))
            UNION ALL
            SELECT format('ALTER %s %s OWNER TO taskhub_owner',
                          CASE p.prokind WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
                          p.oid::regprocedure)
              FROM pg_proc p
             WHERE p.pronamespace = 'taskhub'::regnamespace
                OR (p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'procrastinate\_%')
            UNION ALL
            SELECT format('ALTER TYPE %s OWNER TO taskhub_owner', t.oid::regtype)
              FROM pg_type t
             WHERE t.typnamespace = 'public'::regnamespace AND t.typname LIKE 'procrastinate\_%'
               AND t.typtype IN ('e', 'c')
               AND NOT EXISTS (SELECT 1 FROM pg_class c  -- a table's row type follows it
                                WHERE c.oid = t.typrelid AND c.relkind <> 'c')
        LOOP
            EXECUTE item.statement;
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'taskhub: % may not hand its objects to taskhub_owner (%); it keeps '
            'owning them. Grant taskhub_owner to it, or run this file as a superuser',
            current_user, SQLERRM;
    END;
END;
$$;

-- The grants, to each role that exists.
DO $$
DECLARE
    procrastinate_tables text := 'procrastinate_jobs, procrastinate_events, '
                                 'procrastinate_periodic_defers, procrastinate_workers';
    owner_name text;
    item regclass;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'taskhub_readonly') THEN
        GRANT USAGE ON SCHEMA taskhub TO taskhub_readonly;
        EXECUTE 'GRANT SELECT ON ' || procrastinate_tables || ', alembic_version'
             || ' TO taskhub_readonly';
        GRANT SELECT ON ALL TABLES IN SCHEMA taskhub TO taskhub_readonly;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'taskhub_api') THEN
        GRANT USAGE ON SCHEMA taskhub TO taskhub_api;
        EXECUTE 'GRANT SELECT ON ' || procrastinate_tables || ', alembic_version'
             || ' TO taskhub_api';
        GRANT SELECT ON ALL TABLES IN SCHEMA taskhub TO taskhub_api;
        -- Defer: a new job only (no status, worker or attempts of its own choosing).
        GRANT INSERT (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
            ON procrastinate_jobs TO taskhub_api;
        -- Cancel (procrastinate_cancel_job_v1) and retry: no worker_id, so no fetching.
        GRANT UPDATE (status, abort_requested, scheduled_at) ON procrastinate_jobs TO taskhub_api;
        -- procrastinate's triggers record the events of the API's own changes.
        GRANT INSERT ON procrastinate_events TO taskhub_api;
        GRANT USAGE ON SEQUENCE procrastinate_jobs_id_seq, procrastinate_events_id_seq,
            taskhub.audit_log_id_seq TO taskhub_api;
        GRANT INSERT ON taskhub.audit_log TO taskhub_api;
        GRANT INSERT, UPDATE ON taskhub.idempotency_keys TO taskhub_api;
        GRANT DELETE ON taskhub.job_progress, taskhub.job_results TO taskhub_api;
        GRANT INSERT, DELETE ON taskhub.job_waiters, taskhub.paused_queues TO taskhub_api;
        GRANT EXECUTE ON FUNCTION procrastinate_cancel_job_v1(bigint, boolean, boolean),
            taskhub.wake_workers(bigint, text), taskhub.purge_queue(text, text) TO taskhub_api;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'taskhub_worker') THEN
        GRANT USAGE ON SCHEMA taskhub TO taskhub_worker;
        EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON ' || procrastinate_tables
             || ' TO taskhub_worker';
        GRANT SELECT ON ALL TABLES IN SCHEMA taskhub TO taskhub_worker;
        FOR item IN SELECT c.oid::regclass FROM pg_class c
                     WHERE c.relnamespace = 'taskhub'::regnamespace AND c.relkind IN ('r', 'p')
        LOOP
            EXECUTE format('GRANT INSERT, UPDATE, DELETE ON %s TO taskhub_worker', item);
        END LOOP;
        -- The audit log is appended to, never rewritten, by anyone but its owner.
        REVOKE UPDATE, DELETE ON taskhub.audit_log FROM taskhub_worker;
        -- pg_dump (backups) reads every table and sequence it dumps.
        GRANT SELECT ON alembic_version TO taskhub_worker;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA taskhub TO taskhub_worker;
        GRANT USAGE, SELECT ON SEQUENCE procrastinate_jobs_id_seq, procrastinate_events_id_seq,
            procrastinate_workers_id_seq, procrastinate_periodic_defers_id_seq
            TO taskhub_worker;
        EXECUTE (SELECT 'GRANT EXECUTE ON FUNCTION ' || string_agg(p.oid::regprocedure::text, ', ')
                        || ' TO taskhub_worker'
                   FROM pg_proc p
                  WHERE p.prokind = 'f'
                    AND ((p.pronamespace = 'public'::regnamespace
                          AND p.proname LIKE 'procrastinate\_%')
                         OR (p.pronamespace = 'taskhub'::regnamespace
                             AND p.proname <> 'purge_queue')));
    END IF;

    -- Objects later revisions create in schema taskhub, as taskhub_owner or as this migrator:
    -- tables and sequences. What a new function may do is for its own revision to grant.
    FOREACH owner_name IN ARRAY ARRAY['taskhub_owner', current_user::text] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = owner_name);
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'taskhub_readonly') THEN
                EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA taskhub'
                               ' GRANT SELECT ON TABLES TO taskhub_readonly', owner_name);
            END IF;
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'taskhub_api') THEN
                EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA taskhub'
                               ' GRANT SELECT ON TABLES TO taskhub_api', owner_name);
            END IF;
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'taskhub_worker') THEN
                EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA taskhub'
                               ' GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES'
                               ' TO taskhub_worker', owner_name);
                EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA taskhub'
                               ' GRANT USAGE, SELECT ON SEQUENCES TO taskhub_worker',
                               owner_name);
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'taskhub: no default privileges for objects % creates: %',
                owner_name, SQLERRM;
        END;
    END LOOP;
END;
$$;

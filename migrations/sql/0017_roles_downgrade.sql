-- This database's grants to the taskhub roles go, and so does taskhub.purge_queue; PUBLIC may
-- execute procrastinate's functions again. The roles stay: they are cluster-wide and other
-- databases may use them (DROP ROLE them by hand once no database does). Objects keep
-- taskhub_owner as their owner: reassigning them is a superuser's call (REASSIGN OWNED).
DROP FUNCTION taskhub.purge_queue(text, text);

DO $$
DECLARE
    grantee text;
    owner_name text;
    fn regprocedure;
BEGIN
    FOR grantee IN SELECT rolname FROM pg_roles
                    WHERE rolname IN ('taskhub_api', 'taskhub_worker', 'taskhub_readonly')
    LOOP
        EXECUTE format('REVOKE ALL ON procrastinate_jobs, procrastinate_events, '
                       'procrastinate_periodic_defers, procrastinate_workers, alembic_version '
                       'FROM %I', grantee);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA taskhub FROM %I', grantee);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA taskhub FROM %I', grantee);
        EXECUTE format('REVOKE ALL ON SEQUENCE procrastinate_jobs_id_seq, '
                       'procrastinate_events_id_seq, procrastinate_workers_id_seq, '
                       'procrastinate_periodic_defers_id_seq FROM %I', grantee);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA taskhub FROM %I', grantee);
        EXECUTE format('REVOKE USAGE ON SCHEMA taskhub FROM %I', grantee);
        FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p
                   WHERE p.pronamespace = 'public'::regnamespace
                     AND p.proname LIKE 'procrastinate\_%'
        LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', fn, grantee);
        END LOOP;
        FOREACH owner_name IN ARRAY ARRAY['taskhub_owner', current_user::text] LOOP
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = owner_name);
            BEGIN
                EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA taskhub'
                               ' REVOKE ALL ON TABLES FROM %I', owner_name, grantee);
                EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA taskhub'
                               ' REVOKE ALL ON SEQUENCES FROM %I', owner_name, grantee);
            EXCEPTION WHEN insufficient_privilege THEN
                NULL;  -- the upgrade could not set them either
            END;
        END LOOP;
    END LOOP;

    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p
               WHERE (p.pronamespace = 'public'::regnamespace
                      AND p.proname LIKE 'procrastinate\_%')
                  OR (p.pronamespace = 'taskhub'::regnamespace
                      AND p.proname NOT IN ('stats_bounds', 'add_counts', 'sum_counts',
                                            'purge_queue'))
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', fn);
    END LOOP;
END;
$$;

-- migrate_as_owner --
-- A login granted taskhub_owner (and no superuser) migrates as taskhub_owner, so the objects it
-- creates belong to that role, like the others (migration 0017). Returns the role set, or no
-- row when the login stays itself.
SELECT set_config('role', 'taskhub_owner', false) AS role
 WHERE NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)
   AND CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'taskhub_owner')
            THEN pg_has_role(session_user, 'taskhub_owner', 'MEMBER')
            ELSE false
       END;

DROP FUNCTION IF EXISTS taskhub.defer_periodic_job(
    character varying, character varying, character varying, character varying, integer,
    character varying, bigint, jsonb
);

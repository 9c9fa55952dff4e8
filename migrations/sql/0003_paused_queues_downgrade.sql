DROP FUNCTION IF EXISTS taskhub.fetch_job(character varying[], bigint);
DROP TABLE IF EXISTS taskhub.paused_queues;

DROP FUNCTION IF EXISTS taskhub.take_rate_limit(text, integer, double precision);
DROP TABLE IF EXISTS taskhub.rate_limit_hits;

DROP TABLE IF EXISTS fieldops.reports;
DROP TABLE IF EXISTS fieldops.audit_trail;
DROP TABLE IF EXISTS fieldops.notifications;
DROP TABLE IF EXISTS fieldops.schedules;
DROP SCHEMA IF EXISTS fieldops;

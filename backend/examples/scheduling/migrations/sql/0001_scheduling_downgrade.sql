DROP VIEW IF EXISTS scheduling.schedule_overview;
DROP VIEW IF EXISTS scheduling.employee_overview;
DROP TABLE IF EXISTS scheduling.schedules;
DROP TABLE IF EXISTS scheduling.employees;
DROP SCHEMA IF EXISTS scheduling;

#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory (compose.yaml mounts
# it into /docker-entrypoint-initdb.d): taskhub's group roles, one login per component granted
# its role, and the database handed to taskhub_owner so the migrator can create the schema.
# Migration 0017 grants each role its privileges; it would create the group roles too, but the
# logins need them first. Passwords come from the environment (see compose.yaml).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v db="$POSTGRES_DB" \
    -v migrator_password="$TASKHUB_MIGRATOR_PASSWORD" \
    -v api_password="$TASKHUB_API_DB_PASSWORD" \
    -v worker_password="$TASKHUB_WORKER_DB_PASSWORD" \
    -v reporting_password="$TASKHUB_REPORTING_DB_PASSWORD" <<'SQL'
CREATE ROLE taskhub_owner NOLOGIN;
CREATE ROLE taskhub_api NOLOGIN;
CREATE ROLE taskhub_worker NOLOGIN;
CREATE ROLE taskhub_readonly NOLOGIN;
CREATE ROLE taskhub_migrator LOGIN PASSWORD :'migrator_password' IN ROLE taskhub_owner;
CREATE ROLE taskhub_api_user LOGIN PASSWORD :'api_password' IN ROLE taskhub_api;
CREATE ROLE taskhub_worker_user LOGIN PASSWORD :'worker_password' IN ROLE taskhub_worker;
CREATE ROLE taskhub_reporting LOGIN PASSWORD :'reporting_password' IN ROLE taskhub_readonly;
ALTER DATABASE :"db" OWNER TO taskhub_owner;
SQL

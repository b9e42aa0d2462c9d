#!/bin/bash
# Run once by the postgres image's entrypoint when the primary's data
# directory is created (/docker-entrypoint-initdb.d/). Streaming replication
# needs no other setting in PostgreSQL 15 (wal_level=replica and
# max_wal_senders=10 are the defaults); the replicas connect as postgres,
# which has the REPLICATION attribute, over the compose network.
set -euo pipefail

# The image allows `host all all all scram-sha-256`; "all" does not match
# replication connections, which need their own line.
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"

# A table the load-balancing examples read from the replicas.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE TABLE IF NOT EXISTS lb_demo (id serial PRIMARY KEY, note text NOT NULL, at timestamptz NOT NULL DEFAULT now());
INSERT INTO lb_demo (note) VALUES ('written on the primary');
SQL

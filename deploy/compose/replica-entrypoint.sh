#!/bin/bash
# Entrypoint of replica1 and replica2: on first start, clone the primary with
# pg_basebackup (-R writes standby.signal and primary_conninfo), then hand
# over to the postgres image's own entrypoint, which finds an initialised
# data directory and starts the server as a hot standby.
#
# Environment: PRIMARY_HOST, POSTGRES_USER, POSTGRES_PASSWORD, REPLICA_NAME.
set -euo pipefail

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 0700 "$PGDATA"
    until gosu postgres pg_isready -q -h "$PRIMARY_HOST" -p 5432 -U "$POSTGRES_USER"; do
        echo "replica ${REPLICA_NAME}: waiting for ${PRIMARY_HOST}:5432"
        sleep 1
    done
    echo "replica ${REPLICA_NAME}: cloning ${PRIMARY_HOST} with pg_basebackup"
    PGPASSWORD="$POSTGRES_PASSWORD" gosu postgres pg_basebackup \
        --host="$PRIMARY_HOST" --port=5432 --username="$POSTGRES_USER" \
        --pgdata="$PGDATA" --wal-method=stream --checkpoint=fast \
        --write-recovery-conf --no-password
    # Name the WAL receiver after the replica (pg_stat_replication on the
    # primary shows it); a later line in postgresql.auto.conf wins over the
    # primary_conninfo that -R wrote.
    echo "primary_conninfo = 'host=${PRIMARY_HOST} port=5432 user=${POSTGRES_USER} password=${POSTGRES_PASSWORD} application_name=${REPLICA_NAME}'" \
        >> "$PGDATA/postgresql.auto.conf"
fi

exec docker-entrypoint.sh "$@"

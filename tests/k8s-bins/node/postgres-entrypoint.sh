#!/bin/sh
# Entrypoint of the postgres:17-bookworm stand-in (scripts/node-images.sh): the
# official image's first-start steps, for the environment it documents
# (POSTGRES_PASSWORD, POSTGRES_USER, POSTGRES_DB, PGDATA), then the server as
# uid 999. Runs as root in the container, like the official image's.
set -eu
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
mkdir -p "$PGDATA" /var/run/postgresql
chown 999:999 "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
as_postgres() { setpriv --reuid=999 --regid=999 --clear-groups "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  # The password through a file, not argv, where any process could read it.
  printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pwfile
  chown 999 /tmp/pwfile
  as_postgres initdb -D "$PGDATA" --username="$user" --pwfile=/tmp/pwfile \
    --auth-local=trust --auth-host=scram-sha-256 --locale=C --encoding=UTF8 >/dev/null
  rm -f /tmp/pwfile
  # initdb allows host logins from loopback only; the image allows the network.
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    printf 'CREATE DATABASE "%s" OWNER "%s"\n' "$db" "$user" | as_postgres postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "docker-entrypoint.sh: database $db initialised"
fi
exec setpriv --reuid=999 --regid=999 --clear-groups postgres -D "$PGDATA" -c listen_addresses='*'

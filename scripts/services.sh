#!/usr/bin/env bash
# Starts the services the tests need when they are not already answering. Idempotent.
#   PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`) for the signalbox-server tests.
set -euo pipefail

log() { printf '  services: %s\n' "$*"; }

pg_host=127.0.0.1
pg_port=5432

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "services: warning: PostgreSQL client tools not installed; PostgreSQL tests will fail" >&2
  exit 0
fi

if pg_isready -q -h "$pg_host" -p "$pg_port"; then
  log "PostgreSQL is up"
else
  log "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
    for version in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
  else
    echo "services: warning: no PostgreSQL cluster found to start" >&2
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h "$pg_host" -p "$pg_port" && break
    sleep 1
  done
  if pg_isready -q -h "$pg_host" -p "$pg_port"; then
    log "PostgreSQL is up"
  else
    echo "services: error: PostgreSQL did not come up on $pg_host:$pg_port" >&2
    exit 1
  fi
fi

# The tests create their own databases from the `test` database; make sure it exists.
if ! psql -h "$pg_host" -p "$pg_port" -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1; then
  psql -h "$pg_host" -p "$pg_port" -U postgres -d postgres -qc 'CREATE DATABASE test' >/dev/null 2>&1 || true
fi

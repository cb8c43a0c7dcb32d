#!/usr/bin/env bash
# Starts the services the tests need when they are not already answering. Idempotent.
#   PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`) for the signalbox-server tests.
set -euo pipefail

log() { printf '  services: %s\n' "$*"; }

pg_host=127.0.0.1
pg_port=5432

start_postgres() {
  if ! command -v pg_isready >/dev/null 2>&1; then
    echo "services: warning: PostgreSQL client tools not installed; PostgreSQL tests will fail" >&2
    return 0
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
      return 1
    fi
  fi

  # The tests create their own databases from the `test` database; make sure it exists.
  if ! psql -h "$pg_host" -p "$pg_port" -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1; then
    psql -h "$pg_host" -p "$pg_port" -U postgres -d postgres -qc 'CREATE DATABASE test' >/dev/null 2>&1 || true
  fi
}
start_postgres

# ---------------------------------------------------------------------------------------------
# Redis on 127.0.0.1:6379 and NATS on 127.0.0.1:4222 for the backplane tests (signalbox-redis,
# signalbox-nats). Installed from Debian packages when missing; started when not answering.

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() { # name port
  for _ in $(seq 1 50); do
    answers "$2" && { log "$1 is up"; return 0; }
    sleep 0.2
  done
  echo "services: error: $1 did not come up on 127.0.0.1:$2" >&2
  return 1
}

backplane_packages=()
command -v redis-server >/dev/null 2>&1 || backplane_packages+=(redis-server)
[[ -x /usr/sbin/nats-server ]] || command -v nats-server >/dev/null 2>&1 || backplane_packages+=(nats-server)
if (( ${#backplane_packages[@]} > 0 )); then
  log "installing ${backplane_packages[*]}"
  if [[ $(id -u) -eq 0 ]]; then sudo_cmd=(); else sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq "${backplane_packages[@]}" >/dev/null
fi

if answers 6379; then
  log "Redis is up"
else
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for_port Redis 6379
fi

if answers 4222; then
  log "NATS is up"
else
  log "starting NATS"
  mkdir -p /var/lib/nats-server
  nats_bin=/usr/sbin/nats-server
  [[ -x $nats_bin ]] || nats_bin=$(command -v nats-server)
  start-stop-daemon --start --oknodo --background --exec "$nats_bin" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_for_port NATS 4222
fi

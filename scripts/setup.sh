#!/usr/bin/env bash
# Installs what scripts/test.sh needs on a fresh Debian machine. Idempotent:
# each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '  setup: %s\n' "$*"; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Node.js and npm (the e2e tests use Node's built-in test runner, Node >= 20).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "installing nodejs and npm from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq nodejs npm >/dev/null
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if (( node_major < 20 )); then
  echo "setup: warning: Node $(node --version) found; the e2e tests expect Node >= 20" >&2
fi

# rustfmt and clippy (normally part of the machine's toolchain).
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then
    log "adding rustfmt and clippy components"
    rustup component add rustfmt clippy
  else
    echo "setup: warning: cargo fmt / cargo clippy missing and no rustup to add them" >&2
  fi
fi

# e2e node dependencies: npm ci only when node_modules is missing or the
# manifest/lock changed since the last install.
stamp=e2e/node_modules/.signalbox-deps.sha256
want=$(cat e2e/package.json e2e/package-lock.json | sha256sum | cut -d' ' -f1)
if [[ -d e2e/node_modules && -f $stamp && $(cat "$stamp") == "$want" ]]; then
  log "e2e node dependencies up to date"
else
  log "installing e2e node dependencies (npm ci)"
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi

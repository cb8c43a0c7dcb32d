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

# Chromium for the browser tests (e2e/tests/dashboard.test.mjs and page.test.mjs, driven by
# playwright-core with executablePath /usr/bin/chromium).
if [ -x /usr/bin/chromium ]; then
  log "chromium present"
else
  log "installing chromium from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  as_root bash -c 'apt-get update -qq && apt-get install -y -qq chromium' >/dev/null
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

# Python e2e dependencies (e2e/python/requirements.txt, exact pins) in a venv
# at e2e/python/.venv: created when missing, pip runs only when a pin is not
# satisfied.
venv=e2e/python/.venv
if [[ ! -x $venv/bin/python ]]; then
  log "creating the Python e2e venv ($venv)"
  python3 -m venv "$venv"
fi
if "$venv/bin/python" - e2e/python/requirements.txt <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    try:
        if version(name.strip()) != want.strip():
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
then
  log "Python e2e dependencies up to date"
else
  log "installing Python e2e dependencies (pip install -r e2e/python/requirements.txt)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r e2e/python/requirements.txt
fi

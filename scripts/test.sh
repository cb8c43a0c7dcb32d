#!/usr/bin/env bash
# The single test command: setup, formatting, lints, build, Rust tests, then the
# end-to-end tests (official SignalR JS client against the example servers, then
# the Python signalrcore client against the streaming example).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "setup"
bash scripts/setup.sh

step "services (PostgreSQL for the signalbox-server tests)"
bash scripts/services.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo doc (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "cargo build"
cargo build --workspace --all-targets --quiet

step "cargo test"
cargo test --workspace --quiet

target_dir=$(cargo metadata --format-version 1 --no-deps |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
export SIGNALBOX_CHAT_BIN="${SIGNALBOX_CHAT_BIN:-$target_dir/debug/examples/chat}"
export SIGNALBOX_CONFORMANCE_BIN="${SIGNALBOX_CONFORMANCE_BIN:-$target_dir/debug/signalbox-conformance}"
export SIGNALBOX_SERVER_BIN="${SIGNALBOX_SERVER_BIN:-$target_dir/debug/signalbox}"
export SIGNALBOX_STREAMING_BIN="${SIGNALBOX_STREAMING_BIN:-$target_dir/debug/examples/streaming}"

# Both e2e suites run even if the first fails; the script fails if either did.
step "e2e tests (node --test, server: $SIGNALBOX_CHAT_BIN)"
node_rc=0
node --test --test-reporter=spec e2e/tests/*.test.mjs || node_rc=$?

step "e2e tests (pytest, Python client, server: $SIGNALBOX_STREAMING_BIN)"
py_rc=0
PYTHONDONTWRITEBYTECODE=1 e2e/python/.venv/bin/python -m pytest -p no:cacheprovider -rfE e2e/python || py_rc=$?
if ((py_rc == 5)); then
  # pytest's "no tests were collected" must not pass (or hide) silently.
  echo "test.sh: pytest collected no tests in e2e/python" >&2
fi
if ((node_rc != 0 || py_rc != 0)); then
  echo "test.sh: e2e failures (node exit $node_rc, pytest exit $py_rc)" >&2
  exit 1
fi

step "bench smoke (signalbox-bench, every scenario, a few seconds each)"
bash scripts/bench-smoke.sh

step "fuzz smoke (cargo-fuzz, every target in fuzz/, 10 s each)"
bash scripts/fuzz-smoke.sh

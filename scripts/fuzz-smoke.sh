#!/usr/bin/env bash
# Fuzz smoke test: every cargo-fuzz target in fuzz/ for a short bounded time (FUZZ_SECONDS,
# default 10 s each; 9 targets), starting from the committed seed corpora. New inputs go to a
# temporary directory, so fuzz/corpus stays as committed. A crash fails the script and leaves
# the input in fuzz/artifacts/<target>/ (see docs/fuzzing.md for minimising and reproducing).
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address, …); on a stable toolchain
# RUSTC_BOOTSTRAP=1 enables them. cargo-fuzz is installed (bounded to 15 minutes) if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${FUZZ_SECONDS:-10}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz"
  timeout 900 cargo install cargo-fuzz --locked --quiet
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd fuzz
cargo fuzz build >/dev/null 2>&1 || cargo fuzz build
failed=0
for target in $(cargo fuzz list); do
  mkdir -p "$work/$target"
  start=$SECONDS
  if cargo fuzz run "$target" "$work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$work/$target.log" 2>&1; then
    runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$work/$target.log" | grep -oE '[0-9]+$' || echo '?')
    printf 'fuzz-smoke: %-16s ok   %10s runs in %3d s\n' "$target" "$runs" $((SECONDS - start))
  else
    printf 'fuzz-smoke: %-16s FAILED (input in fuzz/artifacts/%s/)\n' "$target" "$target"
    grep -E -A20 'panicked|ERROR: libFuzzer|SUMMARY' "$work/$target.log" | head -60 || tail -40 "$work/$target.log"
    failed=1
  fi
done
exit "$failed"

#!/usr/bin/env bash
# Short smoke of every signalbox-bench scenario (a few hundred connections, a few seconds each,
# both protocols, with the bare-WebSocket baseline; the aiosignalr baseline too when
# AIOSIGNALR_PYTHON points at a Python with aiosignalr installed). Checks that the results JSON
# has sane fields and that nothing failed or got lost. Not a measurement: see docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build -p signalbox-bench --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bench="$target_dir/debug/signalbox-bench"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

targets="signalbox,bare-ws"
if [[ -n "${AIOSIGNALR_PYTHON:-}" ]]; then targets="$targets,aiosignalr"; fi
common=(--targets "$targets" --protocols json,messagepack --workers 2 --sources 2)

"$bench" idle "${common[@]}" -n 300 --out "$out/idle.json"
"$bench" broadcast "${common[@]}" -n 200 --rates 20 --secs 1.5 --out "$out/broadcast.json"
"$bench" user "${common[@]}" -n 200 --rates 200 --secs 1.5 --out "$out/user.json"
"$bench" group "${common[@]}" -n 200 --groups 10 --rates 100 --secs 1.5 --out "$out/group.json"

python3 - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
idle = json.load(open(os.path.join(d, "idle.json")))
assert idle["machine"]["nproc"] >= 1
for r in idle["idle"]:
    ramp = r["ramp"]
    assert ramp["connected"] == ramp["requested"] and ramp["failed"] == 0, r
    assert ramp["connects_per_sec"] > 0 and ramp["handshake"]["p99_ms"] > 0, r
    assert r["rss_after_kib"] > 0 and r["closed_while_idle"] == 0, r
assert any(x["baseline"] == "bare-ws" for x in idle["idle_ratios"])
for name in ("broadcast", "user", "group"):
    res = json.load(open(os.path.join(d, name + ".json")))
    assert res["results"], name
    for r in res["results"]:
        assert r["ramp"]["failed"] == 0, (name, r["ramp"])
        for s in r["steps"]:
            assert s["publish_errors"] == 0 and s["expected"] > 0, (name, s)
            assert s["delivered"] == s["expected"] and s["lost"] == 0, (name, r["target"], s)
            assert s["latency"]["count"] == s["delivered"] and s["latency"]["p99_ms"] > 0, (name, s)
            assert s["closed"] == 0, (name, s)
    assert res["ratios"], name
print("bench smoke: all scenarios OK")
PY

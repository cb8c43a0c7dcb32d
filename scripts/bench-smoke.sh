#!/usr/bin/env bash
# Short smoke of every signalbox-bench scenario (a few hundred connections, a few seconds each,
# both protocols, with the bare-WebSocket baseline; the aiosignalr baseline too when
# AIOSIGNALR_PYTHON points at a Python with aiosignalr installed; the service's storm and a
# 2-node cluster with the debug `signalbox` binary, PostgreSQL and NATS on loopback). Checks that the results JSON
# has sane fields and that nothing failed or got lost. Not a measurement: see docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build -p signalbox-bench -p signalbox-server --quiet
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

# The service (`signalbox serve`, the debug build): a storm on SQLite beside the library, and a
# 2-node cluster on NATS and a fresh PostgreSQL database (both services from scripts/services.sh).
service=(--server-bin "$target_dir/debug/signalbox" --workers 2 --sources 2)
"$bench" storm "${service[@]}" -n 200 --against library,sqlite --replay-users 20 \
  --settle-timeout 5 --out "$out/storm.json"
"$bench" publish "${service[@]}" -n 300 -k 2 --against sqlite --out "$out/publish.json"
"$bench" cluster "${service[@]}" --nodes 2 -n 400 --step-count 2 --rate 1 --secs 1 \
  --out "$out/cluster.json"

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
storm = json.load(open(os.path.join(d, "storm.json")))
assert [r["target"] for r in storm["storm"]] == ["library", "sqlite"], storm["storm"]
for r in storm["storm"]:
    ramp = r["ramp"]
    assert ramp["connected"] == ramp["requested"] == 200 and ramp["failed"] == 0, r
    assert ramp["connects_per_sec"] > 0 and r["set_up_secs"] is not None, r
    assert r["online_reached"] == 200 and r["closed"] == 0, r
    assert r["replays_received"] == r["replay_users"], r
assert storm["storm"][1]["replay_users"] == 20 and storm["storm"][1]["replay_complete_secs"] > 0
assert storm["ratios"] and storm["ratios"][0]["set_up_per_sec"] > 0, storm["ratios"]
cluster = json.load(open(os.path.join(d, "cluster.json")))["cluster"]
assert cluster["error"] is None and cluster["nodes"] == 2, cluster
assert [s["connected"] for s in cluster["steps"]] == [200, 400], cluster["steps"]
for s in cluster["steps"]:
    assert s["ramp"]["failed"] == 0 and s["online_secs"] is not None, s
    assert s["published"] == 1 and s["publish_errors"] == 0, s
    assert s["delivered"] == s["expected"] == s["connected"] and s["lost"] == 0, s
    assert s["duplicates"] == 0 and s["closed"] == 0 and s["latency"]["p99_ms"] > 0, s
    assert len(s["nodes"]) == 2 and all(n["rss_kib"] > 0 for n in s["nodes"]), s
for r in json.load(open(os.path.join(d, "publish.json")))["publish"]:
    assert r["published"] == 2 and r["rows_stored"] == 2 * 301 and r["lost"] == 0, r
    assert r["duplicates"] == 0 and r["delivered"] == r["expected"] == 2 * r["connected"], r
print("bench smoke: all scenarios OK")
PY

#!/usr/bin/env bash
# Smoke test for the load generator: starts its own ringhub (and, for S6, its own Redis and
# two ringhub instances on a Redis backplane), runs every scenario (the soak's churn too) for
# a few seconds with small N and --require-zero-loss --json, and fails if any of them fails.
# The real soak, with its flatness check, is loadtest/soak.sh.
#
# Needs: cargo build --release --workspace (target/release/ringhub and target/release/loadgen),
# redis-server on PATH (S6; a missing one fails the smoke run), python3 (summaries).
# Usage: loadtest/smoke.sh            (from anywhere; takes about a minute)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SERVER="$ROOT/target/release/ringhub"
LOADGEN="$ROOT/target/release/loadgen"
WORK="$(mktemp -d /tmp/ringhub-smoke.XXXXXX)"
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
# shellcheck source=loadtest/ringhub-ready.sh
source "$ROOT/loadtest/ringhub-ready.sh"

for bin in "$SERVER" "$LOADGEN"; do
    [[ -x "$bin" ]] || { echo "smoke: $bin missing; run: cargo build --release --workspace" >&2; exit 2; }
done

# A throw-away server key for the REST API (the soak publishes through it).
export HUB_SERVER_KEY="smoke-$RANDOM$RANDOM$RANDOM"
KEY_HASH="$(printf %s "$HUB_SERVER_KEY" | sha256sum | cut -d' ' -f1)"

# Starts ringhub on a free port with the given extra --set flags; sets STARTED_PID and
# STARTED_URL.
start_ringhub() {
    local name="$1"
    shift
    local log="$WORK/$name.log"
    "$SERVER" --listen 127.0.0.1:0 --workers 1 \
        --set runtime.pin_cores=false \
        --set diagnostics.enabled=true --set echo.enabled=true \
        --set signalr.invocation_rate=1000000 --set signalr.invocation_burst=1000000 --set limits.max_connections_per_ip=0 --set limits.negotiate_rate_per_ip=0 \
        "$@" >"$log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_ringhub_ready "smoke: $name" "$STARTED_PID" "$log"
    STARTED_URL="$READY_URL"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

FAILED=0
# run NAME ARGS...: one loadgen run; prints a one-line summary, remembers failures.
run() {
    local name="$1"
    shift
    local out="$WORK/$name.json"
    local rc=0
    "$LOADGEN" --quiet --json --require-zero-loss --warmup 1s --duration 2s --drain 3s "$@" \
        >"$out" 2>"$WORK/$name.err" || rc=$?
    if [[ -s "$out" ]]; then
        python3 - "$name" "$rc" "$out" <<'EOF'
import json, sys
name, rc, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = json.load(open(path))
l, c = r["latency_us"], r["connections"]
extra = ""
if r.get("server") and r["server"].get("cpu_us_per_unit") is not None:
    extra += f' cpu {r["server"]["cpu_us_per_unit"]:.2f}us/{r["server"]["unit"]}'
if r["server"] and r["server"].get("rss_per_connection_kib") is not None:
    extra += f' rss {r["server"]["rss_per_connection_kib"]:.2f}KiB/conn'
if r.get("redis"):
    extra += f' redis {r["redis"]["per_message"]} cmds/msg'
for k, v in r.get("notes", {}).items():
    extra += f" {k}: {v}"
print(f'{"ok  " if rc == 0 else "FAIL"} {name:<22} conns {c["established"]}/{c["failed"]} failed '
      f'drops {c["drops"]} sent {r["sent"]} delivered {r["delivered"]}/{r["expected"]} '
      f'errors {r["errors"]} p50 {l["p50"]}us p99 {l["p99"]}us{extra}')
for e in r.get("error_samples", [])[:3]:
    print(f"     error: {e}")
EOF
    else
        echo "FAIL $name (exit $rc, no report)"
        sed 's/^/     /' "$WORK/$name.err" | tail -n 5
    fi
    if [[ $rc -ne 0 ]]; then
        FAILED=$((FAILED + 1))
    fi
}

start_ringhub main --set "auth.server_key_hashes=[\"$KEY_HASH\"]"
URL="$STARTED_URL"
PID="$STARTED_PID"
echo "smoke: ringhub at $URL (pid $PID)"
common=(--url "$URL" --server-pid "$PID")

run s1-json "${common[@]}" s1 --connections 200 --hold 2s
run s1-msgpack "${common[@]}" --protocol msgpack s1 --connections 200 --ramp 0 --hold 1s
run s2-json "${common[@]}" s2 --subscribers 50 --rate 200
run s2-msgpack "${common[@]}" --protocol msgpack s2 --subscribers 50 --rate 200
run s2-closed-loop "${common[@]}" s2 --subscribers 50 --rate 0
run s3-small-json "${common[@]}" s3 --shape small --connections 200 --rate 40
run s3-small-msgpack "${common[@]}" --protocol msgpack s3 --shape small --connections 200 --rate 40
run s3-churn "${common[@]}" s3 --shape churn --connections 200 --rate 40 \
    --join-rate 20 --leave-rate 20 --reconnect-rate 4 --churners 20
run s4-json "${common[@]}" s4 --connections 20 --rate 1000
run s4-msgpack "${common[@]}" --protocol msgpack s4 --connections 20 --rate 1000
run s4-closed-loop "${common[@]}" s4 --connections 20 --rate 0
run s4-raw-echo "${common[@]}" --protocol raw s4 --connections 20 --rate 1000
run s4-two-processes "${common[@]}" --processes 2 --sources 2 s4 --connections 20 --rate 1000
run s5-echo-json "${common[@]}" s5 --mode echo --check-oversize
run s5-echo-msgpack "${common[@]}" --protocol msgpack s5 --mode echo --check-oversize
run s5-broadcast-json "${common[@]}" s5 --mode broadcast --check-oversize
run s5-broadcast-msgpack "${common[@]}" --protocol msgpack s5 --mode broadcast
run stream "${common[@]}" stream --connections 5 --items 50
run soak-churn "${common[@]}" soak --clients 20 --groups 4 --rate 100 \
    --lifetime-min 200ms --lifetime-max 1s --sample-every 500ms

if command -v redis-server >/dev/null; then
    REDIS_PORT="$(free_port)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        >"$WORK/redis.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    backplane=(--set backplane.kind=redis --set "backplane.redis_url=redis://127.0.0.1:$REDIS_PORT")
    start_ringhub a "${backplane[@]}"
    URL_A="$STARTED_URL"
    PID_A="$STARTED_PID"
    start_ringhub b "${backplane[@]}"
    URL_B="$STARTED_URL"
    PID_B="$STARTED_PID"
    echo "smoke: redis on $REDIS_PORT, instance A $URL_A, instance B $URL_B"
    run s6-cross-json --url "$URL_B" --server-pid "$PID_B" s6 --publish-url "$URL_A" \
        --publish-server-pid "$PID_A" --redis-port "$REDIS_PORT"
    run s6-cross-msgpack --url "$URL_B" --server-pid "$PID_B" --protocol msgpack s6 \
        --publish-url "$URL_A" --redis-port "$REDIS_PORT"
    run s6-same-instance --url "$URL_B" --server-pid "$PID_B" s6 --same-instance \
        --redis-port "$REDIS_PORT"
else
    echo "smoke: redis-server not found: S6 cannot run (install redis-server)" >&2
    FAILED=$((FAILED + 1))
fi

if [[ $FAILED -ne 0 ]]; then
    echo "smoke: $FAILED run(s) failed"
    exit 1
fi
echo "smoke: all runs passed"

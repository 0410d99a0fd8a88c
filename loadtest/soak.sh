#!/usr/bin/env bash
# Soak test: starts its own release ringhub (2 shards, REST API keyed with a throw-away server
# key) on a free port, runs `loadgen soak` against it for DURATION with connection churn and a
# REST publisher, and fails on any loss, sequence error, failed connect, unexpected close or
# publish error, or when the server's RSS or open fds grow after the warm-up
# (--require-zero-loss --require-flat; the rule is in loadtest/README.md).
#
# Needs: cargo build --release --workspace (target/release/ringhub and target/release/loadgen),
# python3 (the summary).
# Usage: loadtest/soak.sh [DURATION] [extra loadgen flags...]    (DURATION: 2m by default)
# The warm-up is a third of DURATION, at least 30 s and at most 5 min; samples every 2 s up
# to 5 min, every 10 s beyond. Environment:
#   SOAK_OUT=FILE        keep the JSON report (time series included) in FILE
#   SOAK_SERVER_LOG=FILE keep the server's log in FILE
#   SOAK_CLIENTS, SOAK_GROUPS, SOAK_RATE, SOAK_LIFETIME_MIN, SOAK_LIFETIME_MAX, SOAK_WORKERS
#                        override the load (defaults: 200 clients, 10 groups, 200 msg/s,
#                        lifetimes 1s..10s, 2 server shards)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SERVER="$ROOT/target/release/ringhub"
LOADGEN="$ROOT/target/release/loadgen"
WORK="$(mktemp -d /tmp/ringhub-soak.XXXXXX)"
SERVER_PID=""

DURATION="${1:-2m}"
shift || true

cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "${SOAK_SERVER_LOG:-}" && -f "$WORK/server.log" ]]; then
        cp "$WORK/server.log" "$SOAK_SERVER_LOG"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
# shellcheck source=loadtest/ringhub-ready.sh
source "$ROOT/loadtest/ringhub-ready.sh"

for bin in "$SERVER" "$LOADGEN"; do
    [[ -x "$bin" ]] || { echo "soak: $bin missing; run: cargo build --release --workspace" >&2; exit 2; }
done

# DURATION in seconds (30s, 2m, 1h or plain seconds).
seconds() {
    python3 - "$1" <<'EOF'
import re, sys
m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|min|h)?", sys.argv[1].strip())
if not m:
    sys.exit(f"soak: '{sys.argv[1]}' is not a duration (e.g. 2m, 30m, 90s)")
print(int(float(m[1]) * {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600}[m[2]]))
EOF
}
TOTAL="$(seconds "$DURATION")"
WARMUP=$((TOTAL / 3))
((WARMUP < 30)) && WARMUP=30
((WARMUP > 300)) && WARMUP=300
MEASURED=$((TOTAL - WARMUP))
((MEASURED >= 30)) || { echo "soak: DURATION must be at least 60s" >&2; exit 2; }
SAMPLE=2s
((TOTAL > 300)) && SAMPLE=10s

KEY="soak-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
HASH="$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)"
LOG="$WORK/server.log"
"$SERVER" --listen 127.0.0.1:0 --workers "${SOAK_WORKERS:-2}" \
    --set runtime.pin_cores=false --set diagnostics.enabled=true \
    --set "auth.server_key_hashes=[\"$HASH\"]" >"$LOG" 2>&1 &
SERVER_PID=$!
wait_ringhub_ready "soak: ringhub" "$SERVER_PID" "$LOG"
URL="$READY_URL"
echo "soak: ringhub at $URL (pid $SERVER_PID), ${TOTAL}s run, ${WARMUP}s warm-up, samples every $SAMPLE"

OUT="${SOAK_OUT:-$WORK/soak.json}"
rc=0
HUB_SERVER_KEY="$KEY" "$LOADGEN" --url "$URL" --server-pid "$SERVER_PID" --json --quiet \
    --require-zero-loss --warmup "${WARMUP}s" --duration "${MEASURED}s" --spin-us 0 --sources 4 \
    soak --clients "${SOAK_CLIENTS:-200}" --groups "${SOAK_GROUPS:-10}" --rate "${SOAK_RATE:-200}" \
    --lifetime-min "${SOAK_LIFETIME_MIN:-1s}" --lifetime-max "${SOAK_LIFETIME_MAX:-10s}" \
    --sample-every "$SAMPLE" --require-flat "$@" >"$OUT" 2>"$WORK/loadgen.err" || rc=$?

if [[ -s "$OUT" ]]; then
    python3 - "$OUT" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["soak"]
c = r["connections"]
print(f'soak: {s["connections_opened"]} connections opened ({c["failed"]} failed, {c["drops"]} dropped), '
      f'{s["connections_left"]} left ({s["connections_abrupt"]} abruptly); '
      f'{s["published"]} messages published ({s["publish_failed"]} failed)')
print(f'soak: owed {s["owed"]} deliveries, received {s["received_owed"]}, lost {s["lost"]}, '
      f'{s["seq_errors"]} sequence errors, {r["errors"]} errors; latency p50 {r["latency_us"]["p50"]}us '
      f'p99 {r["latency_us"]["p99"]}us max {r["latency_us"]["max"]}us')
for name, unit in (("rss", " KiB"), ("fds", "")):
    v = s[name]
    if v is None:
        print(f"soak: {name}: too few samples after the warm-up")
        continue
    print(f'soak: {name} after {s["warmup_s"]:.0f}s: {v["first_mean"]:.0f} -> {v["last_mean"]:.0f}{unit} '
          f'(growth {v["growth"]:+.0f}, fitted {v["trend"]:+.0f}, {v["slope_per_hour"]:+.0f}/h; '
          f'tolerance {v["tolerance"]:.0f}): {"flat" if v["flat"] else "GROWS"}')
first, last = s["series"][0], s["series"][-1]
print(f'soak: server before the first client: rss {first["rss_kib"]} KiB, fds {first["fds"]}; '
      f'1 s after the last: rss {last["rss_kib"]} KiB, fds {last["fds"]}, '
      f'connections {last["server_connections"]}')
for e in r.get("error_samples", [])[:5]:
    print(f"soak: error: {e}")
EOF
else
    echo "soak: loadgen wrote no report (exit $rc)"
    tail -n 20 "$WORK/loadgen.err" | sed 's/^/     /'
fi
if [[ $rc -ne 0 ]]; then
    echo "soak: FAILED (loadgen exit $rc)"
    exit 1
fi
echo "soak: passed"

#!/usr/bin/env bash
# S6 in one command: a redis-server of its own on a free port, instances A and B of ringhub
# (one shard each, Redis backplane) and `loadgen s6`, pinned as perf-scenarios.md §4 says:
# both instances on CPU 0, Redis and the load generator on CPU 1.
#
#   perf/s6.sh [--name NAME] [--same-instance] [--perf] [--set KEY=VALUE]... [-- <s6 flags>]
#   perf/s6.sh --name cross-1000 -- --rate 1000
#   perf/s6.sh --name same-1000 --same-instance -- --rate 1000
#   perf/s6.sh --name tput --perf -- --subscribers 10 --rate 50000
#
# Writes perf/results/<date>-s6-<NAME>.json: the load generator's report (latency, loss, CPU
# per delivery on B and per message on A, Redis commands per message) plus `redis_cpu`
# (redis-server utime+stime over the whole run, per message sent). `--perf` runs A from the
# profiling build under `perf record` and writes perf/results/<date>-s6-<NAME>.svg.
# Loadgen flags before the scenario (`--warmup`, `--duration`, `--protocol`) go in S6_COMMON
# (default: --warmup 3s --duration 10s --drain 3s); S6_RINGHUB picks another ringhub binary
# (default target/release/ringhub), e.g. a build of an older commit for a before/after;
# S6_REDIS_CPU=0 moves Redis next to the instances (a diagnostic, not the harness).
# Needs: cargo build --release --workspace (and --profile profiling for --perf), redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."

name=run
same=()
use_perf=0
server_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name=$2; shift 2 ;;
    --same-instance) same=(--same-instance); shift ;;
    --perf) use_perf=1; shift ;;
    --set) server_args+=(--set "$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "unknown flag $1 (s6 flags go after --)" >&2; exit 2 ;;
  esac
done
read -r -a common <<<"${S6_COMMON:---warmup 3s --duration 10s --drain 3s}"
ringhub=${S6_RINGHUB:-target/release/ringhub}
redis_cpu=${S6_REDIS_CPU:-1}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

out=perf/results/$(date +%F)-s6-$name
work=$(mktemp -d /tmp/ringhub-s6.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

redis_port=$(free_port)
taskset -c "$redis_cpu" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done

# start NAME BINARY [PREFIX...]: one instance on CPU 0; sets URL and PID.
start() {
  local label=$1 bin=$2
  shift 2
  local port
  port=$(free_port)
  taskset -c 0 "$@" "$bin" --listen "127.0.0.1:$port" --workers 1 \
    --set runtime.pin_cores=false --set diagnostics.enabled=true \
    --set signalr.invocation_rate=1000000 --set signalr.invocation_burst=1000000 \
    --set backplane.kind=redis --set "backplane.redis_url=redis://127.0.0.1:$redis_port" \
    "${server_args[@]}" >"$work/$label.log" 2>&1 &
  pids+=($!)
  URL="http://127.0.0.1:$port"
  until curl -sf "$URL/health/ready" >/dev/null; do sleep 0.05; done
  PID=$(pgrep -n -f -- "--listen 127.0.0.1:$port")
}

if [[ $use_perf == 1 ]]; then
  start a target/profiling/ringhub perf record -e cpu-clock -F 4999 -g -o "$work/perf.data" --
else
  start a "$ringhub"
fi
url_a=$URL pid_a=$PID
start b "$ringhub"
url_b=$URL pid_b=$PID

redis_before=$(cpu_ticks "$redis_pid")
started=$(date +%s.%N)
rc=0
taskset -c 1 target/release/loadgen --json "${common[@]}" --url "$url_b" --server-pid "$pid_b" \
  s6 --publish-url "$url_a" --publish-server-pid "$pid_a" --redis-port "$redis_port" \
  "${same[@]}" "$@" >"$work/report.json" || rc=$?
ended=$(date +%s.%N)
redis_after=$(cpu_ticks "$redis_pid")

python3 - "$work/report.json" "$out.json" "$(getconf CLK_TCK)" "$redis_before" "$redis_after" \
  "$started" "$ended" <<'EOF'
import json, sys
src, dst, hz = sys.argv[1], sys.argv[2], int(sys.argv[3])
rb, ra, t0, t1 = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
r = json.load(open(src))
sent_total = r["counters"].get("sent_total") or r["sent"]
cpu_s = (ra - rb) / hz
r["redis_cpu"] = {
    "cpu_s": cpu_s,
    "cpu_percent": round(100 * cpu_s / (t1 - t0), 1),
    "cpu_us_per_message": round(cpu_s * 1e6 / sent_total, 2) if sent_total else None,
    "note": "whole run (setup, warm-up, window, drain) over every message sent",
}
json.dump(r, open(dst, "w"), indent=2)
l, c = r["latency_us"], r["connections"]
a, b = r.get("publish_server") or {}, r.get("server") or {}
print(f'{dst}: sent {r["sent"]} ({r["rate_sent_per_s"]:.0f}/s) delivered {r["delivered"]}/{r["expected"]} '
      f'lost {r["lost"]} errors {r["errors"]} drops {c["drops"]}')
print(f'  latency us p50 {l["p50"]} p99 {l["p99"]} p99.9 {l.get("p999")} max {l["max"]}')
print(f'  A cpu {a.get("cpu_us_per_unit")} us/msg  B cpu {b.get("cpu_us_per_unit")} us/delivery  '
      f'redis {r.get("redis")}  redis cpu {r["redis_cpu"]["cpu_percent"]} % '
      f'({r["redis_cpu"]["cpu_us_per_message"]} us/msg)  client cpu {r["client"]["cpu_percent"]} %')
EOF

if [[ $use_perf == 1 ]]; then
  kill -INT "$pid_a"
  wait "${pids[1]}" 2>/dev/null || true
  if [[ ! -x target/tools/bin/inferno-flamegraph ]]; then
    cargo install --locked --quiet inferno --root target/tools
  fi
  perf script -i "$work/perf.data" 2>/dev/null \
    | target/tools/bin/inferno-collapse-perf \
    | target/tools/bin/inferno-flamegraph --title "ringhub instance A: s6 $*" >"$out.svg" \
    || echo "flamegraph failed" >&2
  echo "wrote $out.svg"
fi
exit "$rc"

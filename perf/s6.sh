#!/usr/bin/env bash
# S6 in one command: a redis-server of its own on a free port, instances A and B of a server
# (one shard each, Redis backplane) and `loadgen s6`, pinned as perf-scenarios.md §4 says:
# both instances on CPU 0, Redis and the load generator on CPU 1.
#
#   perf/s6.sh [--name NAME] [--servers ringhub,bun] [--repeat N] [--same-instance] [--perf]
#              [--set KEY=VALUE]... [-- <s6 flags>]
#   perf/s6.sh --name cross-1000 -- --rate 1000
#   perf/s6.sh --name same-1000 --same-instance -- --rate 1000
#   perf/s6.sh --name side-1000 --servers ringhub,bun --repeat 2 -- --rate 1000
#   perf/s6.sh --name tput --perf -- --subscribers 10 --rate 50000
#
# Servers: `ringhub` (SignalR JSON, SendToGroup through its ASP.NET-style Redis backplane) and
# `bun` (perf/peers/bun-server.js --redis: Bun's built-in Redis client, raw contract, the
# publisher's frame PUBLISHed and every received one `server.publish`ed). Each run gets a fresh
# Redis and fresh instances; repetitions are interleaved across servers.
#
# Writes perf/results/<date>-s6-<NAME>.json for a single ringhub run (the historical name), or
# <date>-s6-<NAME>-<server>-<rep>.json per run when --servers or --repeat is given, plus
# <date>-s6-<NAME>.md with one row per run: the load generator's report (latency, loss, CPU per
# delivery on B and per message on A, Redis commands per message) plus `redis_cpu`
# (redis-server utime+stime over the whole run, per message sent). `--perf` runs ringhub's A
# from the profiling build under `perf record` and writes perf/results/<date>-s6-<NAME>.svg.
# Loadgen flags before the scenario (`--warmup`, `--duration`, `--spin-us`) go in S6_COMMON
# (default: --warmup 3s --duration 10s --drain 3s); S6_RINGHUB picks another ringhub binary
# (default target/release/ringhub), e.g. a build of an older commit for a before/after;
# S6_LOADGEN another load generator (default target/release/loadgen);
# S6_REDIS_CPU=0 moves Redis next to the instances (a diagnostic, not the harness).
# S6_SLICE_US=100 runs A, B, Redis and the load generator with a 100 µs EEVDF slice
# (perf/slice.py), so a process of another user on the same cores is preempted when one of
# them wakes up instead of keeping the core for the rest of its 1.4 ms slice (default 0: the
# kernel's slice; the 100 µs runs of 2026-11-28-s6-tail.md did not show a clear gain).
# Needs: cargo build --release --workspace (and --profile profiling for --perf), redis-server,
# and for bun: npm ci --prefix perf/peers.
set -euo pipefail
cd "$(dirname "$0")/.."

name=run
same=()
use_perf=0
servers=ringhub
repeat=1
many=0
server_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name=$2; shift 2 ;;
    --servers) servers=$2; many=1; shift 2 ;;
    --repeat) repeat=$2; many=1; shift 2 ;;
    --same-instance) same=(--same-instance); shift ;;
    --perf) use_perf=1; shift ;;
    --set) server_args+=(--set "$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "unknown flag $1 (s6 flags go after --)" >&2; exit 2 ;;
  esac
done
read -r -a common <<<"${S6_COMMON:---warmup 3s --duration 10s --drain 3s}"
ringhub=${S6_RINGHUB:-target/release/ringhub}
loadgen=${S6_LOADGEN:-target/release/loadgen}
bun=perf/peers/node_modules/@oven/bun-linux-x64/bin/bun
redis_cpu=${S6_REDIS_CPU:-1}
slice=(perf/slice.py "${S6_SLICE_US:-0}" --)
IFS=, read -r -a server_list <<<"$servers"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

base=perf/results/$(date +%F)-s6-$name
work=$(mktemp -d /tmp/ringhub-s6.XXXXXX)
pids=()
# SIGINT (ringhub drains and exits), then SIGKILL whatever is still up after 3 s (Bun with a
# Redis subscription ignores SIGINT), so a run never holds the bench lock.
stop_all() {
  local pid tries
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for ((tries = 0; tries < 30; tries++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

# start SERVER LABEL [PREFIX...]: one instance on CPU 0; sets URL and PID.
start() {
  local server=$1 label=$2
  shift 2
  local port
  port=$(free_port)
  if [[ $server == bun ]]; then
    "${slice[@]}" taskset -c 0 "$bun" perf/peers/bun-server.js --port "$port" \
      --redis "redis://127.0.0.1:$redis_port" >"$work/$label.log" 2>&1 &
  else
    local bin=$ringhub
    [[ $# -gt 0 ]] && bin=target/profiling/ringhub
    "${slice[@]}" taskset -c 0 "$@" "$bin" --listen "127.0.0.1:$port" --workers 1 \
      --set runtime.pin_cores=false --set diagnostics.enabled=true \
      --set signalr.invocation_rate=1000000 --set signalr.invocation_burst=1000000 --set limits.max_connections_per_ip=0 --set limits.negotiate_rate_per_ip=0 \
      --set backplane.kind=redis --set "backplane.redis_url=redis://127.0.0.1:$redis_port" \
      "${server_args[@]}" >"$work/$label.log" 2>&1 &
  fi
  pids+=($!)
  URL="http://127.0.0.1:$port"
  until curl -sf "$URL/health/ready" >/dev/null; do sleep 0.05; done
  PID=$(pgrep -n -f -- "(--port |--listen 127.0.0.1:)$port( |$)")
}

# run_one SERVER OUT [s6 flags...]: fresh Redis, A and B, one loadgen run; writes OUT.json.
run_one() {
  local server=$1 out=$2
  shift 2
  redis_port=$(free_port)
  "${slice[@]}" taskset -c "$redis_cpu" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' \
    --appendonly no >"$work/redis.log" 2>&1 &
  local redis_pid=$!
  pids+=("$redis_pid")
  until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done

  if [[ $use_perf == 1 && $server == ringhub ]]; then
    start "$server" a perf record -e cpu-clock -F 4999 -g -o "$work/perf.data" --
  else
    start "$server" a
  fi
  local url_a=$URL pid_a=$PID
  start "$server" b
  local url_b=$URL pid_b=$PID
  local protocol=()
  [[ $server == bun ]] && protocol=(--protocol raw)

  local redis_before started ended redis_after rc=0
  redis_before=$(cpu_ticks "$redis_pid")
  started=$(date +%s.%N)
  "${slice[@]}" taskset -c 1 "$loadgen" --json "${common[@]}" "${protocol[@]}" --url "$url_b" \
    --server-pid "$pid_b" s6 --publish-url "$url_a" --publish-server-pid "$pid_a" \
    --redis-port "$redis_port" "${same[@]}" "$@" >"$work/report.json" || rc=$?
  ended=$(date +%s.%N)
  redis_after=$(cpu_ticks "$redis_pid")

  python3 - "$work/report.json" "$out.json" "$(getconf CLK_TCK)" "$redis_before" "$redis_after" \
    "$started" "$ended" "$server" "$(cut -d' ' -f1 /proc/loadavg)" "${S6_SLICE_US:-0}" <<'EOF'
import json, sys
src, dst, hz = sys.argv[1], sys.argv[2], int(sys.argv[3])
rb, ra, t0, t1 = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
r = json.load(open(src))
sent_total = r["counters"].get("sent_total") or r["sent"]
cpu_s = (ra - rb) / hz
r["server_name"] = sys.argv[8]
r["load_average_1m"] = float(sys.argv[9])
r["slice_us"] = int(sys.argv[10])
r["redis_cpu"] = {
    "cpu_s": cpu_s,
    "cpu_percent": round(100 * cpu_s / (t1 - t0), 1),
    "cpu_us_per_message": round(cpu_s * 1e6 / sent_total, 2) if sent_total else None,
    "note": "whole run (setup, warm-up, window, drain) over every message sent",
}
json.dump(r, open(dst, "w"), indent=2)
l, c = r["latency_us"], r["connections"]
a, b = r.get("publish_server") or {}, r.get("server") or {}
lag = r.get("send_lag_us") or {}
print(f'{dst} ({sys.argv[8]}): sent {r["sent"]} ({r["rate_sent_per_s"]:.0f}/s) delivered {r["delivered"]}/{r["expected"]} '
      f'lost {r["lost"]} errors {r["errors"]} drops {c["drops"]}')
print(f'  latency us p50 {l["p50"]} p99 {l["p99"]} p99.9 {l.get("p999")} max {l["max"]}; '
      f'send lag us p50 {lag.get("p50")} p99 {lag.get("p99")}')
print(f'  A cpu {a.get("cpu_us_per_unit")} us/msg  B cpu {b.get("cpu_us_per_unit")} us/delivery  '
      f'redis {r.get("redis")}  redis cpu {r["redis_cpu"]["cpu_percent"]} % '
      f'({r["redis_cpu"]["cpu_us_per_message"]} us/msg)  client cpu {r["client"]["cpu_percent"]} %')
EOF

  if [[ $use_perf == 1 && $server == ringhub ]]; then
    kill -INT "$pid_a"
    wait "${pids[1]}" 2>/dev/null || true
    if [[ ! -x target/tools/bin/inferno-flamegraph ]]; then
      cargo install --locked --quiet inferno --root target/tools
    fi
    perf script -i "$work/perf.data" 2>/dev/null \
      | target/tools/bin/inferno-collapse-perf \
      | target/tools/bin/inferno-flamegraph --title "ringhub instance A: s6 $*" >"$base.svg" \
      || echo "flamegraph failed" >&2
    echo "wrote $base.svg"
  fi
  stop_all
  return "$rc"
}

status=0
outs=()
for ((rep = 1; rep <= repeat; rep++)); do
  for server in "${server_list[@]}"; do
    out=$base
    [[ $many == 1 ]] && out=$base-$server-$rep
    run_one "$server" "$out" "$@" || status=$?
    outs+=("$out.json")
  done
done

# One row per run: the side-by-side summary.
python3 - "$base.md" "${S6_COMMON:---warmup 3s --duration 10s --drain 3s}" "$*" \
  "${same[*]}" "${outs[@]}" <<'EOF'
import json, os, sys
dst, common, flags, same, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
rows = []
for path in runs:
    if not os.path.exists(path):
        continue
    r = json.load(open(path))
    l, a, b = r["latency_us"], r.get("publish_server") or {}, r.get("server") or {}
    lag = r.get("send_lag_us") or {}
    rd = r.get("redis") or {}
    rows.append(f'| {r.get("server_name", "ringhub")} | {r["params"]["subscribers"]} | '
                f'{r["params"]["rate"]:g} | {l["p50"]:,.0f} | {l["p99"]:,.0f} | {l["p999"]:,.0f} | '
                f'{lag.get("p50", 0):,.0f} / {lag.get("p99", 0):,.0f} | '
                f'{a.get("cpu_us_per_unit")} | {b.get("cpu_us_per_unit")} | '
                f'{rd.get("per_message")} | {r["redis_cpu"]["cpu_percent"]} % | '
                f'{r["client"]["cpu_percent"]:.0f} % | {r["lost"]} | {r.get("slice_us")} | {r.get("load_average_1m")} | '
                f'`{os.path.basename(path)}` |')
head = ("| server | subs | rate/s | p50 µs | p99 µs | p99.9 µs | send lag p50 / p99 µs | "
        "A µs/msg | B µs/deliv | Redis cmds/msg | Redis CPU | gen CPU | lost | slice µs | load | report |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
text = (f"S6 runs: `perf/s6.sh {same} -- {flags}` with S6_COMMON=`{common}`\n\n"
        + head + "\n" + "\n".join(rows) + "\n")
open(dst, "w").write(text)
print(text)
EOF
exit "$status"

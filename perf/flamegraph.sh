#!/usr/bin/env bash
# Profiles ringhub under one load generator scenario and renders a flamegraph.
#
#   perf/flamegraph.sh [--name NAME] [--set KEY=VALUE]... [--window START:SECONDS] -- <loadgen flags and scenario>
#   perf/flamegraph.sh --name s2-1000 -- s2 --subscribers 1000 --rate 1000 --size 1024
#
# Builds the `profiling` profile (release code with debug info) and the load generator, starts
# ringhub on a free port pinned to CPU 0 (one shard, the Diagnostics hub, rate limits raised)
# under `perf record -e cpu-clock -g` (the only sampling event this VM offers), runs
# `target/release/loadgen` pinned to CPU 1 against it, then folds the samples with inferno
# (installed into target/tools when missing) into perf/results/<date>-flamegraph-<NAME>.svg.
# The loadgen JSON report is written next to it. --window START:SECONDS samples only SECONDS
# from START seconds after the server is up (perf attaches to the running server), e.g. an S1
# hold without its connect ramp or the teardown at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

name=profile
server_args=()
window=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name=$2; shift 2 ;;
    --set) server_args+=(--set "$2"); shift 2 ;;
    --window) window=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown flag $1 (scenario flags go after --)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "usage: perf/flamegraph.sh [--name N] -- <loadgen scenario flags>" >&2; exit 2; }

command -v perf >/dev/null || { echo "perf is required (apt-get install linux-perf)" >&2; exit 1; }
if [[ ! -x target/tools/bin/inferno-flamegraph ]]; then
  cargo install --locked --quiet inferno --root target/tools
fi
cargo build --locked --profile profiling --bin ringhub
cargo build --locked --release -p ringhub-loadgen

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
out=perf/results/$(date +%F)-flamegraph-$name
data=target/perf-$name.data
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

server=(target/profiling/ringhub --listen "127.0.0.1:$port" --workers 1
  --set runtime.pin_cores=false --set diagnostics.enabled=true --set echo.enabled=true
  --set signalr.invocation_rate=1000000 --set signalr.invocation_burst=1000000 --set limits.max_connections_per_ip=0 --set limits.negotiate_rate_per_ip=0
  "${server_args[@]}")
sample=(perf record -e cpu-clock -F 4999 -g -o "$data")
if [[ -z $window ]]; then
  taskset -c 0 "${sample[@]}" -- "${server[@]}" >/dev/null 2>&1 &
else
  taskset -c 0 "${server[@]}" >/dev/null 2>&1 &
fi
pids+=($!)
until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; do sleep 0.05; done
server_pid=$(pgrep -n -f "target/profiling/ringhub --listen 127.0.0.1:$port")
if [[ -n $window ]]; then
  (sleep "${window%%:*}" && taskset -c 1 "${sample[@]}" -p "$server_pid" -- sleep "${window##*:}" \
    >/dev/null 2>&1) &
  pids+=($!)
fi

taskset -c 1 target/release/loadgen --url "http://127.0.0.1:$port" --server-pid "$server_pid" \
  --json "$@" > "$out.json"
[[ -z $window ]] || wait "${pids[1]}"
kill -INT "$server_pid"
wait "${pids[0]}" || true

perf script -i "$data" 2>/dev/null \
  | target/tools/bin/inferno-collapse-perf \
  | target/tools/bin/inferno-flamegraph --title "ringhub: loadgen $*" > "$out.svg"
echo "wrote $out.svg and $out.json"

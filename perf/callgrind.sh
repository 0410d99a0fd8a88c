#!/usr/bin/env bash
# Instructions per delivered message, counted by valgrind's callgrind (deterministic on this
# machine, which has no hardware counters).
#
#   perf/callgrind.sh [--subscribers 100] [--size 1024] [--protocol json] [--driver legacy]
#
# Runs ringhub (profiling build, one shard) under `valgrind --tool=callgrind` twice with the same
# fixed broadcast scenario at two publish rates (10/s and 30/s for 5 s: 50 and 150 messages to
# every subscriber), and reports (instructions of run B − run A) / (deliveries of B − A): the
# setup, handshakes, timers and teardown are the same in both runs and cancel out. The driver is
# epoll (`legacy`) by default: under valgrind 3.19 a thread blocked in io_uring_enter never sees
# the SIGINT that stops the server, so an io_uring run does not end. Everything above the driver
# (sessions, codecs, fan-out, outboxes) is the same code on both drivers. Writes
# perf/results/<date>-callgrind.md (appending a row per run of this script).
set -euo pipefail
cd "$(dirname "$0")/.."

subscribers=100
size=1024
protocol=json
driver=legacy
while [[ $# -gt 0 ]]; do
  case "$1" in
    --subscribers) subscribers=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --protocol) protocol=$2; shift 2 ;;
    --driver) driver=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install valgrind)" >&2; exit 1; }
cargo build --locked --profile profiling --bin ringhub
cargo build --locked --release -p ringhub-loadgen

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run RATE -> prints "<instructions> <deliveries>"
run() {
  local rate=$1 port out server_pid
  port=$(free_port)
  out=target/callgrind-$rate.out
  rm -f "$out"
  taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" \
    target/profiling/ringhub --listen "127.0.0.1:$port" --workers 1 \
    --set runtime.pin_cores=false --set "runtime.driver=$driver" \
    --set diagnostics.enabled=true \
    --set signalr.invocation_rate=1000000 --set signalr.invocation_burst=1000000 --set limits.max_connections_per_ip=0 --set limits.negotiate_rate_per_ip=0 \
    >/dev/null 2>&1 &
  server_pid=$!
  until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; do sleep 0.2; done
  taskset -c 1 target/release/loadgen --url "http://127.0.0.1:$port" --protocol "$protocol" \
    --warmup 0s --duration 5s --drain 20s --connect-timeout 60s --json \
    s2 --subscribers "$subscribers" --rate "$rate" --size "$size" > "target/callgrind-$rate.json"
  kill -INT "$server_pid"
  wait "$server_pid" || true
  local instructions deliveries
  instructions=$(awk '/^summary:/ {print $2; exit}' "$out")
  deliveries=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["delivered"])' "target/callgrind-$rate.json")
  echo "$instructions $deliveries"
}

read -r ia da < <(run 10)
read -r ib db < <(run 30)
per=$(python3 -c "print(round(($ib - $ia) / ($db - $da)))")
echo "run A: $ia instructions, $da deliveries; run B: $ib instructions, $db deliveries"
echo "instructions per delivered message: $per"

report=perf/results/$(date +%F)-callgrind.md
if [[ ! -f "$report" ]]; then
  cat > "$report" <<HEAD
# Instructions per delivered message (callgrind), $(date +%F)

Method: \`perf/callgrind.sh\` runs the profiling build (one shard) under
\`valgrind --tool=callgrind\` twice with the same broadcast (loadgen s2, 5 s) at 10 and 30
messages/s and divides the difference in instructions by the difference in deliveries, so
setup and teardown cancel out. Machine: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs).

| commit | driver | protocol | subscribers | payload | instructions / delivery |
|---|---|---|---|---|---|
HEAD
fi
echo "| $(git rev-parse --short HEAD) | $driver | $protocol | $subscribers | $size B | $per |" >> "$report"
echo "appended to $report"

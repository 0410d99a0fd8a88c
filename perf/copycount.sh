#!/usr/bin/env bash
# Counts the large user-space copies (memcpy/memmove of at least 16 KiB) a ringhub server makes
# per delivered message under a load generator scenario, through the LD_PRELOAD shim in
# perf/copycount/. Kernel socket copies (recv into and send from user buffers) are not counted.
#
#   perf/copycount.sh [--ringhub BIN] -- s5 --mode echo --connections 10 --duration 10s
set -euo pipefail
cd "$(dirname "$0")/.."

ringhub=target/release/ringhub
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ringhub) ringhub=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown flag $1 (scenario flags go after --)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "usage: perf/copycount.sh [--ringhub BIN] -- <loadgen scenario flags>" >&2; exit 2; }
mkdir -p target/tools
gcc -O2 -shared -fPIC -o target/tools/copycount.so perf/copycount/copycount.c -ldl

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
counts=$(mktemp)
report=$(mktemp)
COPYCOUNT_OUT=$counts LD_PRELOAD=$PWD/target/tools/copycount.so taskset -c 0 "$ringhub" \
  --listen "127.0.0.1:$port" --workers 1 --set runtime.pin_cores=false \
  --set diagnostics.enabled=true --set signalr.invocation_rate=1000000 \
  --set signalr.invocation_burst=1000000 --set limits.max_connections_per_ip=0 --set limits.negotiate_rate_per_ip=0 >/dev/null 2>&1 &
server=$!
until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; do sleep 0.05; done
taskset -c 1 target/release/loadgen --url "http://127.0.0.1:$port" --warmup 0s --json "$@" > "$report"
kill -INT "$server"
wait "$server" || true
delivered=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["delivered"])' "$report")
cat "$counts"
echo "delivered $delivered"
python3 -c "import sys; c=int(sys.argv[1]); d=int(sys.argv[2]); print(f'large copies per delivered message: {c/d:.3f}')" \
  "$(awk '/^large_copies/ {print $2}' "$counts")" "$delivered"
rm -f "$counts" "$report"

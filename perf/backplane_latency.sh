#!/usr/bin/env bash
# Cross-instance latency through the Redis backplane: redis-server and two release ringhub
# instances (2 shards each) on free ports, then perf/backplane_latency.mjs. Needs
# `cargo build --release` and `npm ci --prefix tests/js`. Env: COUNT (2000), RATE (500/s).
set -euo pipefail
cd "$(dirname "$0")/.."
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
urls=()
for _ in 1 2; do
  port=$(free_port)
  target/release/ringhub --listen "127.0.0.1:$port" --workers 2 \
    --set backplane.kind=redis --set "backplane.redis_url=redis://127.0.0.1:$redis_port" \
    --set diagnostics.enabled=true --set signalr.invocation_rate=1000000 \
    --set signalr.invocation_burst=1000000 --set limits.max_connections_per_ip=0 --set limits.negotiate_rate_per_ip=0 >/dev/null 2>&1 &
  pids+=($!)
  urls+=("http://127.0.0.1:$port")
  until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; do sleep 0.05; done
done
HUB_URLS="$(IFS=,; echo "${urls[*]}")" REDIS_PORT="$redis_port" node perf/backplane_latency.mjs

#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (kosoku) against ringhub's raw WebSocket echo route
# and diffs the verdicts against tests/autobahn/expected-results.json.
#
#   tests/autobahn/run.sh [--update]      (--update rewrites the expected results)
#
# Cases 1-7, 9 and 10. 12.* and 13.* need permessage-deflate, which ringhub does not negotiate.
# Exit status: 0 when every verdict matches and none is FAILED/UNIMPLEMENTED.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/tests/autobahn"
venv="$root/target/autobahn-venv"
report="$root/target/autobahn-report"
bin="${AUTOBAHN_SERVER_BIN:-$root/target/release/ringhub}"

if [[ ! -x "$venv/bin/kosoku" ]]; then
  echo "autobahn: installing kosoku into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
if [[ ! -x "$bin" ]]; then
  echo "autobahn: $bin not found; build it first (cargo build --release)" >&2
  exit 2
fi

rm -rf "$report"
mkdir -p "$report"
log="$report/server.log"
RINGHUB_LOG=info "$bin" --listen 127.0.0.1:0 --workers 1 \
  --set echo.enabled=true --set echo.max_message_size=16MiB \
  --set runtime.pin_cores=false >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's/.*listening.*addr=\([0-9.:]*\).*/\1/p' "$log" | head -n1)"
  [[ -n "$addr" ]] && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 2; }
  sleep 0.1
done
[[ -n "$addr" ]] || { echo "autobahn: server did not report its address" >&2; cat "$log" >&2; exit 2; }
echo "autobahn: ringhub at $addr; running cases 1-7, 9, 10"

set +e
"$venv/bin/kosoku" "ws://$addr/ws/echo" -o "$report" -p 1 \
  -i '1.*' -i '2.*' -i '3.*' -i '4.*' -i '5.*' -i '6.*' -i '7.*' -i '9.*' -i '10.*' \
  >"$report/kosoku.log" 2>&1
kosoku_status=$?
set -e
tail -n 5 "$report/kosoku.log"

kill -TERM "$server"
if ! wait "$server"; then
  echo "autobahn: ringhub did not exit cleanly after SIGTERM" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
trap - EXIT

python3 "$here/compare.py" "$report/index.json" "$here/expected-results.json" "${1:-}"
if [[ $kosoku_status -ne 0 ]]; then
  echo "autobahn: kosoku reported failing cases (exit $kosoku_status)" >&2
  exit 1
fi

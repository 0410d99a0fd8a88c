# Sourced by smoke.sh and soak.sh: waits for a ringhub started in the background with its log
# in a file.
#
# wait_ringhub_ready WHO PID LOG: waits for the `listening addr=` line in LOG, then for
# /health/ready to answer 200, and sets READY_URL (http://ADDR). Prints the log and exits 1,
# naming WHO, when the process dies, prints no address or never becomes ready (5 s each).
wait_ringhub_ready() {
    local who="$1" pid="$2" log="$3" addr=""
    for _ in $(seq 1 100); do
        addr="$(grep -so 'listening addr=[0-9.:]*' "$log" | head -n1 | cut -d= -f2 || true)"
        [[ -n "$addr" ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "$who did not start" >&2; exit 1; }
        sleep 0.05
    done
    [[ -n "$addr" ]] || { cat "$log" >&2; echo "$who printed no address" >&2; exit 1; }
    READY_URL="http://$addr"
    for _ in $(seq 1 100); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "$READY_URL/health/ready")" == 200 ]] && return
        sleep 0.05
    done
    echo "$who never became ready" >&2
    exit 1
}

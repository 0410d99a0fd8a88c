#!/usr/bin/env bash
# Runs every ringhub test suite on a fresh Linux machine: formatting, lints, docs, the Rust unit
# and integration tests (both monoio drivers, the official @microsoft/signalr client suite, the
# Redis key store and backplane against a real redis-server; the status page and the official
# browser client in headless Chromium; the io_uring floor), the benches (run
# once, and built in the bench profile), the fuzz targets (built, replaying their seeds and
# regression inputs), a smoke run of every load generator scenario, a 2-minute soak, and
# Autobahn|Testsuite against the release binary. Installs what it needs (Python tools into target/), starts every
# service it needs on free ports, and stops them afterwards.
#
#   bash tests/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() { printf '\n==> %s (%ss)\n' "$*" "$((SECONDS - started))"; }

step "toolchain"
cargo --version
rustc --version

step "format"
cargo fmt --all --check

step "clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps

step "protocol/ stays sans-IO"
if grep -rnE 'monoio|std::rc|Rc<|Rc::|quanta|Instant::now|SystemTime' src/protocol \
  | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'; then
  echo "src/protocol must not use monoio, Rc or a clock" >&2
  exit 1
fi

step "official JavaScript client packages (npm ci from tests/js/package-lock.json), pysignalr venv"
command -v node >/dev/null || { echo "node (20+) is required for the JS client suite" >&2; exit 1; }
node --version
npm ci --prefix tests/js --no-audit --no-fund
# tests/py_client.rs runs pysignalr from this venv; rebuilt when the requirements change.
pyvenv=target/pysignalr-venv
if [[ ! -x "$pyvenv/bin/python" ]] \
  || ! cmp -s tests/python/requirements.txt "$pyvenv/requirements.txt"; then
  rm -rf "$pyvenv"
  python3 -m venv "$pyvenv"
  "$pyvenv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
  cp tests/python/requirements.txt "$pyvenv/requirements.txt"
fi

step "redis-server (tests/redis_keys.rs starts its own on a free port)"
if ! command -v redis-server >/dev/null; then
  if [[ $EUID -eq 0 ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
    # Only the binary is wanted: the tests start their own servers.
    service redis-server stop >/dev/null 2>&1 || true
  else
    echo "redis-server (7+) is required for tests/redis_keys.rs; install it (apt-get install redis-server) or run as root" >&2
    exit 1
  fi
fi
redis-server --version

step "chromium (tests/status_page.rs drives Debian's build with playwright-core; no browser download)"
if [[ -z "${HUB_CHROMIUM:-}" ]] && ! command -v chromium >/dev/null; then
  if [[ $EUID -eq 0 ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "!!! chromium is missing and this is not root: the browser tests will be SKIPPED" \
      "(apt-get install chromium, or set HUB_CHROMIUM=/path/to/chromium)" >&2
  fi
fi
"${HUB_CHROMIUM:-chromium}" --version 2>/dev/null || echo "!!! no chromium: browser tests SKIPPED" >&2

step "unit and integration tests (io_uring and legacy drivers, official JS client; the floor)"
cargo test --locked --workspace

step "benches build and run once (test mode), and build in the bench profile"
cargo test --locked --benches
cargo bench --locked --no-run

step "release build (server, load generator, floor)"
cargo build --locked --release --workspace

step "fuzz targets (fuzz/, its own workspace) build and replay their seeds and regression inputs"
cargo build --locked --manifest-path fuzz/Cargo.toml --bins
for source in fuzz/fuzz_targets/*.rs; do
  target=$(basename "$source" .rs)
  inputs=("fuzz/seeds/$target")
  [[ -d "fuzz/regressions/$target" ]] && inputs+=("fuzz/regressions/$target")
  # -runs=0: execute every input once; a panic or a sanitizer report fails the step.
  "fuzz/target/debug/$target" "${inputs[@]}" -runs=0 2>"target/fuzz-$target.log" \
    || { cat "target/fuzz-$target.log" >&2; exit 1; }
  echo "$target: $(grep -o 'Done [0-9]* runs' "target/fuzz-$target.log")"
done

step "load generator smoke run: every scenario S1-S6 for a few seconds against its own servers"
bash loadtest/smoke.sh

step "soak, 2 minutes: churning clients and a REST publisher; zero loss, no errors, RSS and fds flat"
bash loadtest/soak.sh 2m

step "Autobahn|Testsuite 1-7, 9, 10 against the echo route"
bash tests/autobahn/run.sh

step "all suites passed"

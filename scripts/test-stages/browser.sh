#!/usr/bin/env bash
# Browser stage: starts `hookit demo` (private PostgreSQL in a temporary data
# directory, a free port) and drives the dashboard with headless Chromium through
# tests/browser/. Screenshots go to artifacts/browser/ (override: HOOKIT_ARTIFACTS).
# Needs what scripts/setup.sh installs: chromium and tests/browser/node_modules.
set -euo pipefail
cd "$(dirname "$0")/../.."

READY_TIMEOUT=${HOOKIT_DEMO_READY_TIMEOUT:-60}
STOP_TIMEOUT=${HOOKIT_DEMO_STOP_TIMEOUT:-30}
artifacts=${HOOKIT_ARTIFACTS:-$PWD/artifacts/browser}
mkdir -p "$artifacts"

# cargo test built the binary already; this is a no-op then, and keeps the stage
# runnable on its own.
cargo build --locked --quiet
bin=${CARGO_TARGET_DIR:-target}/debug/hookit

# A free loopback port: bind port 0, read what the kernel gave, release it.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
work=$(mktemp -d "${TMPDIR:-/tmp}/hookit-browser.XXXXXX")
# As root, PostgreSQL runs as `postgres`, which must reach its data dir through this one.
chmod 711 "$work"
demo_pid=

stop_demo() {
  local status=$?
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    # SIGTERM: the demo drains and stops its PostgreSQL before exiting.
    kill -TERM "$demo_pid" 2>/dev/null || true
    for _ in $(seq $((STOP_TIMEOUT * 10))); do
      kill -0 "$demo_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$demo_pid" 2>/dev/null; then
      echo "browser: hookit demo did not stop within ${STOP_TIMEOUT}s; killing it" >&2
      kill -KILL "$demo_pid" 2>/dev/null || true
    fi
    wait "$demo_pid" 2>/dev/null || true
  fi
  # PostgreSQL's own pid file: if it is still there, the cluster outlived the demo.
  local pg_pid
  pg_pid=$(head -n 1 "$work/data/pgdata/postmaster.pid" 2>/dev/null || true)
  if [ -n "$pg_pid" ] && kill -0 "$pg_pid" 2>/dev/null; then
    echo "browser: stopping the demo's PostgreSQL (pid $pg_pid) left behind" >&2
    kill -INT "$pg_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  cp "$work/demo.log" "$artifacts/hookit-demo.log" 2>/dev/null || true
  cp "$work/data/postgres.log" "$artifacts/postgres.log" 2>/dev/null || true
  if [ "$status" -ne 0 ]; then
    echo "browser: failed; last lines of the demo's log (all of it: $artifacts/hookit-demo.log):" >&2
    tail -n 40 "$work/demo.log" >&2 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop_demo EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

HOOKIT_DATA_DIR="$work/data" HOOKIT_LISTEN="127.0.0.1:$port" HOOKIT_LOG_FORMAT=text NO_COLOR=1 \
  "$bin" demo >"$work/demo.out" 2>"$work/demo.log" &
demo_pid=$!

# Ready when /readyz answers and the banner (API key last) is printed.
started=$SECONDS
key=
until [ -n "$key" ]; do
  if ! kill -0 "$demo_pid" 2>/dev/null; then
    echo "browser: hookit demo exited before it was ready" >&2
    exit 1
  fi
  if [ $((SECONDS - started)) -ge "$READY_TIMEOUT" ]; then
    echo "browser: hookit demo not ready within ${READY_TIMEOUT}s" >&2
    exit 1
  fi
  if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url/readyz" 2>/dev/null; then
    key=$(grep -E '^hk_[A-Za-z0-9_-]+$' "$work/demo.out" | tail -n 1 || true)
  fi
  [ -n "$key" ] || sleep 0.5
done
echo "browser: hookit demo ready at $url after $((SECONDS - started))s" >&2

HOOKIT_URL=$url HOOKIT_API_KEY=$key HOOKIT_ARTIFACTS=$artifacts \
  node --test --test-concurrency=1 tests/browser/

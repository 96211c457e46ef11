#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs (scripts/setup.sh),
# then runs the Rust unit and integration tests (real PostgreSQL, real kube-apiserver),
# the browser tests (real headless Chromium) and the API fuzzing (schemathesis).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== cargo test" >&2
cargo test --all-targets --locked -- --test-threads="${HOOKIT_TEST_THREADS:-4}"

for stage in scripts/test-stages/*.sh; do
  [ -e "$stage" ] || continue
  echo "== $(basename "$stage" .sh)" >&2
  bash "$stage"
done

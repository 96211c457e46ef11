#!/usr/bin/env bash
# API fuzzing stage (run by scripts/test.sh after cargo test): schemathesis against
# the OpenAPI spec of a real `hookit standalone` with its embedded PostgreSQL, in a
# network namespace of its own that has only loopback, so no fuzzed endpoint URL
# can make the worker send anything off the machine. Fails on any finding.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=target/debug/hookit
[ -x "$bin" ] || cargo build --locked --bin hookit
# HOOKIT_CACHE: a cache root shared by several checkouts, as in scripts/k8s-bins.sh.
# Absolute: run.py starts schemathesis from a temporary working directory.
cache="${HOOKIT_CACHE:-$PWD/.cache}"
[ -x "$cache/venv/bin/schemathesis" ] || scripts/setup.sh
export SCHEMATHESIS="$cache/venv/bin/schemathesis"

# Root (CI): a plain network namespace. Otherwise a user namespace that keeps our
# uid (the embedded PostgreSQL refuses to run as root).
if [ "$(id -u)" -eq 0 ]; then
  isolate=(unshare --net)
else
  isolate=(unshare --user --map-current-user --net)
fi

# Inside: bring loopback up (no dependency on iproute2), then run the fuzzer.
exec "${isolate[@]}" "$cache/venv/bin/python" - <<'PY'
import fcntl, os, socket, struct, sys
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0)))[1]
    fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
os.execv(sys.executable, [sys.executable, "tests/fuzz/run.py"])
PY

#!/usr/bin/env python3
"""Fuzzes the HTTP API from its own OpenAPI spec with schemathesis.

Starts `hookit standalone` (embedded PostgreSQL in a temporary data directory, a free
loopback port), creates an API key and a little data so that routes with ids have
something to find, then runs schemathesis against /openapi.json with the key. Exits
with schemathesis's status; always stops the server and removes the data.

Run it through scripts/test-stages/fuzz.sh, which puts it in a network namespace of
its own: fuzzed endpoints could otherwise point the worker at real addresses.

Environment: HOOKIT_BIN (default target/debug/hookit), SCHEMATHESIS (default
.cache/venv/bin/schemathesis), FUZZ_MAX_EXAMPLES (default 100), FUZZ_SEED (default 1),
FUZZ_CHECKS (default: no 5xx, documented status codes and content types, response
bodies that match their schemas, and inputs that break the schema refused; `all`
adds schemathesis's stricter checks).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("HOOKIT_BIN", os.path.join(ROOT, "target", "debug", "hookit"))
# Absolute, because schemathesis runs with the temporary directory as its cwd.
SCHEMATHESIS = os.path.abspath(os.environ.get("SCHEMATHESIS", os.path.join(ROOT, ".cache", "venv", "bin", "schemathesis")))
CHECKS = os.environ.get("FUZZ_CHECKS", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, key=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_healthy(base, server, log_path, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"fuzz: hookit standalone exited with {server.returncode}:\n{tail(log_path)}")
        try:
            if call(base, "GET", "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"fuzz: hookit standalone was not ready within {timeout} s:\n{tail(log_path)}")


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def stop(server, data_dir):
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    # If the server died hard, its embedded PostgreSQL is still running: stop it by
    # the pid it recorded.
    try:
        with open(os.path.join(data_dir, "pgdata", "postmaster.pid")) as f:
            pid = int(f.readline().strip())
        os.kill(pid, signal.SIGINT)
        for _ in range(300):
            os.kill(pid, 0)
            time.sleep(0.1)
    except (OSError, ValueError):
        pass


def main():
    for path in (BIN, SCHEMATHESIS):
        if not os.access(path, os.X_OK):
            sys.exit(f"fuzz: {path} is missing (cargo build; scripts/setup.sh)")
    data_dir = tempfile.mkdtemp(prefix="hookit-fuzz-")
    log_path = os.path.join(data_dir, "hookit.log")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("HOOKIT_")}
    env.update(
        HOOKIT_DATA_DIR=data_dir,
        HOOKIT_LISTEN=f"127.0.0.1:{port}",
        HOOKIT_LOG_FORMAT="text",
        HOOKIT_ALLOW_PRIVATE_TARGETS="127.0.0.0/8",
        HOOKIT_RETRY_BASE="1s",
        HOOKIT_MAX_ATTEMPTS="2",
        HOOKIT_SHUTDOWN_GRACE="2s",
    )
    with open(log_path, "w") as log:
        server = subprocess.Popen([BIN, "standalone"], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        wait_healthy(base, server, log_path)
        out = subprocess.run([BIN, "keys", "create", "--tenant", "fuzz"], env=env, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            sys.exit(f"fuzz: keys create failed: {out.stderr}")
        key = out.stdout.strip().splitlines()[-1]
        # Targets on a closed loopback port: deliveries fail fast and go nowhere.
        sink = f"http://127.0.0.1:{free_port()}/hook"
        for body in ({"url": sink, "description": "fuzz a"}, {"url": sink, "event_types": ["order.*"], "max_attempts": 1}):
            status, text = call(base, "POST", "/v1/endpoints", key, body)
            if status != 201:
                sys.exit(f"fuzz: creating an endpoint answered {status}: {text!r}")
        status, text = call(base, "POST", "/v1/events", key, {"event_type": "order.created", "payload": {"id": 1}})
        if status != 202:
            sys.exit(f"fuzz: publishing answered {status}: {text!r}")

        cmd = [
            SCHEMATHESIS,
            "run",
            f"{base}/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            CHECKS,
            "--max-examples",
            os.environ.get("FUZZ_MAX_EXAMPLES", "100"),
            "--seed",
            os.environ.get("FUZZ_SEED", "1"),
            # One worker: with the seed, the same requests in the same order every run.
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            os.path.join(data_dir, "report"),
        ]
        print("fuzz:", " ".join(c if not c.startswith("Authorization") else "Authorization: Bearer ***" for c in cmd), flush=True)
        # Its cache (.schemathesis/) goes in the temporary directory, not the work tree.
        result = subprocess.run(cmd, env=env, cwd=data_dir, timeout=900)
        if result.returncode != 0:
            print(f"fuzz: server log (last lines):\n{tail(log_path)}", flush=True)
        return result.returncode
    finally:
        stop(server, data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

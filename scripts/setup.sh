#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, from the project's
# own files: PostgreSQL server binaries, Chromium, the Node test tools, the Python
# fuzzing tools, the tools of the chart-run and kubelet tests' real node, and the
# Go-built Kubernetes test binaries. Idempotent and quick
# when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_packages+=(postgresql)
command -v chromium >/dev/null || apt_packages+=(chromium)
command -v openssl >/dev/null || apt_packages+=(openssl)
# The node of scripts/kubelet-node.sh: the bridge (ip), setpriv (util-linux) for
# its postgres stand-in image, and curl for the documented publish command.
command -v ip >/dev/null || apt_packages+=(iproute2)
command -v setpriv >/dev/null || apt_packages+=(util-linux)
command -v curl >/dev/null || apt_packages+=(curl)
# The kubelet test's node (scripts/kubelet-node.sh): containerd, runc and the
# bridge CNI plugin; gcc for its pause and echo images; strip for the HookIt image.
command -v containerd >/dev/null || apt_packages+=(containerd)
command -v runc >/dev/null || apt_packages+=(runc)
[ -x /usr/lib/cni/bridge ] || apt_packages+=(containernetworking-plugins)
command -v iptables >/dev/null || apt_packages+=(iptables)
command -v gcc >/dev/null || apt_packages+=(gcc libc6-dev)
command -v strip >/dev/null || apt_packages+=(binutils)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  echo "setup: installing ${apt_packages[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

# Browser test tools (playwright-core drives the system Chromium; no browser download).
if [ -f tests/browser/package-lock.json ] && [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "setup: npm ci (tests/browser)" >&2
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

# API fuzzing tools in a private virtualenv.
if [ -f tests/fuzz/requirements.txt ]; then
  stamp=.cache/venv/.requirements
  if [ ! -x .cache/venv/bin/schemathesis ] || ! cmp -s tests/fuzz/requirements.txt "$stamp"; then
    echo "setup: python venv for schemathesis" >&2
    python3 -m venv .cache/venv
    .cache/venv/bin/pip install -q --disable-pip-version-check -r tests/fuzz/requirements.txt
    cp tests/fuzz/requirements.txt "$stamp"
  fi
fi

# kube-apiserver, etcd and helm for the operator tests (cached in .cache/).
if [ "${HOOKIT_SKIP_K8S_BINS:-0}" != 1 ]; then
  scripts/k8s-bins.sh >/dev/null
fi

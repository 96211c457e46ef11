#!/usr/bin/env bash
# The images scripts/kubelet-node.sh imports into its containerd, as
# docker-archive tars (scripts/docker-archive.py), since no registry is
# reachable. Each is built only when its tar is missing.
#
#   scripts/node-images.sh OUTDIR
#
# - pause.tar, localhost/pause:3.10: the sandbox image, a static C program that
#   reaps children and exits on TERM (tests/k8s-bins/node/pause.c).
# - postgres.tar, postgres:17-bookworm: a stand-in for the image that
#   examples/postgres.yaml names. Debian's PostgreSQL server as installed here
#   (another major version), with tests/k8s-bins/node/postgres-entrypoint.sh
#   doing the official image's first-start steps; `sh` and `pg_isready` are
#   there for the manifest's exec probes.
# - echo.tar, mendhak/http-https-echo:31: a stand-in for the receiver that
#   examples/receiver.yaml names (tests/k8s-bins/node/echo.c), which logs every
#   request to stdout as that image does.
# The stand-ins carry the names the YAML uses, so the README's commands run
# unchanged.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ $# -eq 1 ]] || { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
OUT="$1"
mkdir -p "$OUT"

die() { printf 'node-images: error: %s\n' "$*" >&2; exit 1; }

# static_image TAR NAME SOURCE.c BINARY: one static C program as the whole image.
static_image() {
  local tar="$OUT/$1" root="$OUT/${1%.tar}-root"
  [[ -s "$tar" ]] && return
  mkdir -p "$root"
  gcc -Os -static -o "$root/$4" "$ROOT/tests/k8s-bins/node/$3"
  strip "$root/$4"
  python3 "$ROOT/scripts/docker-archive.py" "$tar" "$2" "$root" "[\"/$4\"]" >/dev/null
}

postgres_image() {
  local tar="$OUT/postgres.tar" root="$OUT/postgres-root" pg f lib
  [[ -s "$tar" ]] && return
  pg="$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1)"
  [[ -n "$pg" ]] || die "no PostgreSQL server installed (scripts/setup.sh installs it)"
  pg="$(dirname "$(dirname "$pg")")"
  rm -rf "$root"
  mkdir -p "$root/usr/lib/postgresql" "$root/usr/share/postgresql" "$root/usr/bin" "$root/usr/local/bin" \
    "$root/etc" "$root/tmp" "$root/var/run/postgresql" "$root/var/lib/postgresql/data"
  chmod 1777 "$root/tmp"
  cp -a "$pg" "$root/usr/lib/postgresql/"
  # Without the JIT provider (libLLVM alone is 110 MB), the server does not JIT:
  # it looks for the provider and goes on when there is none.
  rm -rf "$root$pg/lib/bitcode" "$root$pg"/lib/llvmjit*
  cp -a "/usr/share/postgresql/$(basename "$pg")" "$root/usr/share/postgresql/"
  # initdb checks the time zone against the system's tz database (Debian's build).
  cp -a /usr/share/zoneinfo "$root/usr/share/"
  for f in sh mkdir chown chmod cat rm setpriv; do cp -L "$(command -v "$f")" "$root/usr/bin/$f"; done
  for f in "$pg"/bin/*; do ln -sf "$f" "$root/usr/local/bin/$(basename "$f")"; done
  # The shared libraries of every program and server module, at their paths.
  for f in "$root"/usr/bin/* "$root$pg"/bin/* "$root$pg"/lib/*.so; do
    ldd "$f" 2>/dev/null | grep -oE '/[^ ]+' || true
  done | sort -u | while read -r lib; do
    [[ -e "$root$lib" ]] || { mkdir -p "$(dirname "$root$lib")"; cp -L "$lib" "$root$lib"; }
  done
  ln -s usr/bin "$root/bin"
  printf 'root:x:0:0::/root:/bin/sh\npostgres:x:999:999::/var/lib/postgresql:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\npostgres:x:999:\n' >"$root/etc/group"
  cp "$ROOT/tests/k8s-bins/node/postgres-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
  chmod 755 "$root/usr/local/bin/docker-entrypoint.sh"
  python3 "$ROOT/scripts/docker-archive.py" "$tar" postgres:17-bookworm "$root" \
    '["/usr/local/bin/docker-entrypoint.sh"]' >/dev/null
}

static_image pause.tar localhost/pause:3.10 pause.c pause
postgres_image
static_image echo.tar mendhak/http-https-echo:31 echo.c echo

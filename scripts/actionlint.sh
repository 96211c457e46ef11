#!/usr/bin/env bash
# Lints the GitHub Actions workflows with actionlint, built from its Go module
# (no prebuilt binary to download), and fails on any finding.
#
#   scripts/actionlint.sh [FILE...]   lint FILEs (default: .github/workflows/*.yml, *.yaml)
#   scripts/actionlint.sh build       build if missing or stale; print the binary's path
#
# Pin: tests/tools/actionlint/go.mod (+ go.sum). Output: .cache/tools/bin/actionlint;
# module and build caches in .cache/go/{mod,build}, shared with scripts/k8s-bins.sh.
# Rebuilt only when its stamp file (pinned version + hash of go.mod/go.sum) no
# longer matches, so warm runs take well under a second. Progress goes to stderr.
#
# Environment:
#   HOOKIT_CACHE  cache root instead of <repo>/.cache
#   HOOKIT_GO     go binary to use (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIN="$ROOT/tests/tools/actionlint"
MODULE=github.com/rhysd/actionlint
CACHE="${HOOKIT_CACHE:-$ROOT/.cache}"
BIN_DIR="$CACHE/tools/bin"
BIN="$BIN_DIR/actionlint"
STAMP="$BIN_DIR/.actionlint.stamp"
GO_CACHE_ROOT="$CACHE/go"

log() { printf 'actionlint: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_go() {
  if [[ -n "${HOOKIT_GO:-}" ]]; then echo "$HOOKIT_GO"; return; fi
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  if [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go; return; fi
  die "no Go toolchain found (install Go >= 1.26 or set HOOKIT_GO)"
}

go_env() {
  export GOMODCACHE="$GO_CACHE_ROOT/mod"
  export GOCACHE="$GO_CACHE_ROOT/build"
  # -modcacherw keeps the module cache deletable with a plain rm -rf.
  export GOFLAGS="-modcacherw -buildvcs=false"
  export CGO_ENABLED=0
  mkdir -p "$GOMODCACHE" "$GOCACHE"
}

version="$(awk -v m="$MODULE" '($1 == m || ($1 == "require" && $2 == m)) {
    for (i = 1; i <= NF; i++) if ($i ~ /^v[0-9]/) { print $i; exit } }' "$PIN/go.mod")"
[[ -n "$version" ]] || die "cannot read $MODULE version from $PIN/go.mod"

stamp() { echo "$version $(cat "$PIN/go.mod" "$PIN/go.sum" | sha256sum | cut -c1-16)"; }
is_current() { [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp)" ]]; }

build() {
  if is_current; then
    log "$version: up to date"
    return 0
  fi
  # One build at a time: parallel runs may all get here.
  mkdir -p "$BIN_DIR"
  exec 9>"$BIN_DIR/.actionlint.lock"
  if ! flock -n 9; then
    log "another build is running; waiting for it"
    flock 9
  fi
  if is_current; then
    log "$version: built meanwhile"
    return 0
  fi
  local go tmp start
  go="$(find_go)"
  go_env
  tmp="$BIN_DIR/.actionlint.tmp.$$"
  start=$(date +%s)
  log "$version: building $MODULE/cmd/actionlint"
  # Built as a dependency its build info says (devel), so set the version it reports.
  (cd "$PIN" && nice -n 10 "$go" build -trimpath \
      -ldflags "-s -w -X $MODULE.version=$version" -o "$tmp" "$MODULE/cmd/actionlint") \
    || { rm -f "$tmp"; die "building actionlint failed"; }
  mv -f "$tmp" "$BIN"
  stamp > "$STAMP"
  log "$version: built in $(( $(date +%s) - start ))s"
}

if [[ "${1:-}" == build ]]; then
  build
  echo "$BIN"
  exit 0
fi

build
files=()
for f in "$@"; do files+=("$(realpath -m -- "$f")"); done
cd "$ROOT"
if [[ ${#files[@]} -eq 0 ]]; then
  shopt -s nullglob
  files=(.github/workflows/*.yml .github/workflows/*.yaml)
  shopt -u nullglob
  [[ ${#files[@]} -gt 0 ]] || { log "no workflow files in .github/workflows"; exit 0; }
fi
# actionlint runs shellcheck and pyflakes on run: scripts when they are on PATH;
# setup installs neither, so turn both off to get the same findings everywhere.
status=0
"$BIN" -shellcheck= -pyflakes= "${files[@]}" || status=$?
# Exit 1 means findings; 2 and 3 mean bad arguments or a crash.
[[ $status -eq 0 ]] || die "exit $status on ${files[*]} (see above)"
log "${#files[@]} workflow file(s) clean"

#!/usr/bin/env bash
# Builds the Kubernetes binaries the operator tests need -- kube-apiserver,
# kube-controller-manager, etcd, helm, kubelet, kube-scheduler, kube-proxy and
# CoreDNS -- from source with the Go toolchain (the "envtest" arrangement: a real
# API server + etcd, plus the controller manager, kubelet, scheduler, kube-proxy
# and cluster DNS of scripts/kubelet-node.sh's node, for the chart-run and
# kubelet tests; no downloads of prebuilt binaries).
#
#   scripts/k8s-bins.sh [all]           build whatever is missing or stale (default)
#   scripts/k8s-bins.sh kube-apiserver|kube-controller-manager|etcd|helm   build just one
#   scripts/k8s-bins.sh keda-crds                  fetch KEDA's CRDs (tests/k8s-bins/keda/pin)
#   scripts/k8s-bins.sh kubelet         kubelet + kube-scheduler + kube-proxy (tests/k8s-bins/node)
#                                       and coredns (tests/k8s-bins/dns), for
#                                       scripts/kubelet-node.sh (also part of `all`)
#   scripts/k8s-bins.sh otelcol         an OpenTelemetry Collector (OTLP in, OTLP/HTTP out;
#                                       tests/k8s-bins/otelcol) for the tracing test (also in `all`)
#   scripts/k8s-bins.sh check           exit 0 if all are built and current, 1 otherwise
#   scripts/k8s-bins.sh path            print the bin directory
#   scripts/k8s-bins.sh regen-apiserver-mod v1.35.N   rewrite tests/k8s-bins/apiserver/go.mod for another release
#
# Pins live in tests/k8s-bins/{apiserver,etcd,helm,node,dns}/go.mod (+ go.sum); the
# apiserver module pins k8s.io/kubernetes for both of its binaries, the node module
# for the node's three. Output:
# .cache/k8s-bins/bin/{kube-apiserver,kube-controller-manager,etcd,helm}; module and build caches in
# .cache/go/{mod,build}. A binary is rebuilt only when its stamp file (pinned
# version + hash of go.mod/go.sum) no longer matches, so warm runs take well
# under a second. The last line on stdout is the bin directory; progress goes to
# stderr.
#
# Environment:
#   K8S_BINS_JOBS   go build -p value (default: nproc). Builds run under nice.
#   HOOKIT_CACHE    cache root instead of <repo>/.cache (e.g. one shared by several
#                   clones, so a fresh checkout does not rebuild from scratch)
#   K8S_BINS_DIR    override the output directory (default $HOOKIT_CACHE/k8s-bins/bin)
#   HOOKIT_GO       go binary to use (default: go on PATH, else /usr/local/go/bin/go)
#   HOOKIT_KEEP_GO_CACHE=1  keep .cache/go after a build (by default it is emptied
#                   once the binaries are built: it holds 5-7 GB that only a
#                   rebuild would use, and a CI machine ran out of disk with it)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINS="$ROOT/tests/k8s-bins"
CACHE="${HOOKIT_CACHE:-$ROOT/.cache}"
BIN_DIR="${K8S_BINS_DIR:-$CACHE/k8s-bins/bin}"
GO_CACHE_ROOT="$CACHE/go"

log() { printf 'k8s-bins: %s\n' "$*" >&2; }
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

# Version of module $2 required by the go.mod in directory $1.
pinned_version() {
  awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) {
      for (i = 1; i <= NF; i++) if ($i ~ /^v[0-9]/) { print $i; exit } }' "$1/go.mod"
}

stamp_of() { # dir version
  local sum
  sum="$(cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -c1-16)"
  echo "$2 $sum"
}

is_current() { # name dir version
  local bin="$BIN_DIR/$1" stamp="$BIN_DIR/.$1.stamp"
  [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$(stamp_of "$2" "$3")" ]]
}

# build NAME MODULE_DIR VERSION PACKAGE LDFLAGS
build_one() {
  local name="$1" dir="$2" version="$3" pkg="$4" ldflags="$5"
  if is_current "$name" "$dir" "$version"; then
    log "$name $version: up to date"
    return 0
  fi
  local go jobs start tmp
  go="$(find_go)"
  jobs="${K8S_BINS_JOBS:-$(nproc)}"
  go_env
  mkdir -p "$BIN_DIR"
  tmp="$BIN_DIR/.$name.tmp.$$"
  start=$(date +%s)
  log "$name $version: building $pkg (go build -p $jobs; a cold build takes minutes)"
  (cd "$dir" && nice -n 10 "$go" build -p "$jobs" -trimpath -ldflags "-s -w $ldflags" -o "$tmp" "$pkg") \
    || { rm -f "$tmp"; die "building $name failed"; }
  mv -f "$tmp" "$BIN_DIR/$name"
  stamp_of "$dir" "$version" > "$BIN_DIR/.$name.stamp"
  BUILT=1
  log "$name $version: built in $(( $(date +%s) - start ))s"
}

# k8s_build NAME [PIN_DIR]: a binary of k8s.io/kubernetes/cmd/NAME, from the pin in
# PIN_DIR (default the apiserver's; the kubelet's has the same release).
k8s_build() {
  local d="${2:-$PINS/apiserver}" v major minor ldflags=""
  v="$(pinned_version "$d" k8s.io/kubernetes)"
  [[ -n "$v" ]] || die "cannot read k8s.io/kubernetes version from $d/go.mod"
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  # Without these /version (and kubectl's server version) says v0.0.0.
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  build_one "$1" "$d" "$v" "k8s.io/kubernetes/cmd/$1" "$ldflags"
}

build_etcd() {
  local d="$PINS/etcd" v
  v="$(pinned_version "$d" go.etcd.io/etcd/server/v3)"
  [[ -n "$v" ]] || die "cannot read etcd version from $d/go.mod"
  build_one etcd "$d" "$v" go.etcd.io/etcd/server/v3 ""
}

# CoreDNS with only the plugins the node's Corefile uses (tests/k8s-bins/dns/main.go).
build_coredns() {
  local d="$PINS/dns" v
  v="$(pinned_version "$d" github.com/coredns/coredns)"
  [[ -n "$v" ]] || die "cannot read coredns version from $d/go.mod"
  build_one coredns "$d" "$v" . ""
}

# A collector with just the OTLP receiver and the OTLP/HTTP exporter
# (tests/k8s-bins/otelcol/main.go), for tests/it/otel.rs.
build_otelcol() {
  local d="$PINS/otelcol" v
  v="$(pinned_version "$d" go.opentelemetry.io/collector/otelcol)"
  [[ -n "$v" ]] || die "cannot read the collector version from $d/go.mod"
  build_one otelcol "$d" "$v" . ""
}

build_helm() {
  local d="$PINS/helm" v cg major minor ldflags
  v="$(pinned_version "$d" helm.sh/helm/v3)"
  [[ -n "$v" ]] || die "cannot read helm version from $d/go.mod"
  # Like helm's Makefile: default Capabilities.KubeVersion follows client-go (v0.N -> 1.N).
  cg="$(pinned_version "$d" k8s.io/client-go)"
  major=1; minor="${cg#v0.}"; minor="${minor%%.*}"
  ldflags="-X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $p.k8sVersionMajor=$major -X $p.k8sVersionMinor=$minor"
  done
  build_one helm "$d" "$v" helm.sh/helm/v3/cmd/helm "$ldflags"
}

# KEDA's CRDs, from its module zip (verified against the pinned go.sum hash).
keda_crds() {
  local module v sum dir out="$BIN_DIR/../keda-crds" got go
  read -r module v sum < <(grep -v '^#' "$PINS/keda/pin")
  if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$v $sum" ]]; then
    log "keda CRDs $v: up to date"; return
  fi
  go="$(find_go)"; go_env
  local json
  json="$(cd "$PINS" && "$go" mod download -json "$module@$v")" || die "could not download $module@$v"
  dir="$(awk -F'"' '$2=="Dir"{print $4}' <<<"$json")"
  got="$(awk -F'"' '$2=="Sum"{print $4}' <<<"$json")"
  [[ "$got" == "$sum" ]] || die "$module@$v: hash $got, pinned $sum"
  mkdir -p "$out"
  cp "$dir/config/crd/bases/keda.sh_scaledobjects.yaml" "$dir/config/crd/bases/keda.sh_triggerauthentications.yaml" "$out/"
  echo "$v $sum" > "$out/.stamp"
  log "keda CRDs $v: copied to $out"
}

check_all() {
  local ok=0
  is_current kube-apiserver "$PINS/apiserver" "$(pinned_version "$PINS/apiserver" k8s.io/kubernetes)" || ok=1
  is_current kube-controller-manager "$PINS/apiserver" "$(pinned_version "$PINS/apiserver" k8s.io/kubernetes)" || ok=1
  is_current etcd "$PINS/etcd" "$(pinned_version "$PINS/etcd" go.etcd.io/etcd/server/v3)" || ok=1
  is_current helm "$PINS/helm" "$(pinned_version "$PINS/helm" helm.sh/helm/v3)" || ok=1
  is_current kubelet "$PINS/node" "$(pinned_version "$PINS/node" k8s.io/kubernetes)" || ok=1
  is_current kube-scheduler "$PINS/node" "$(pinned_version "$PINS/node" k8s.io/kubernetes)" || ok=1
  is_current kube-proxy "$PINS/node" "$(pinned_version "$PINS/node" k8s.io/kubernetes)" || ok=1
  is_current coredns "$PINS/dns" "$(pinned_version "$PINS/dns" github.com/coredns/coredns)" || ok=1
  is_current otelcol "$PINS/otelcol" "$(pinned_version "$PINS/otelcol" go.opentelemetry.io/collector/otelcol)" || ok=1
  [[ -f "$BIN_DIR/../keda-crds/.stamp" ]] || ok=1
  return $ok
}

regen_apiserver_mod() {
  local v="${1:-}" go src minor
  [[ "$v" =~ ^v1\.[0-9]+\.[0-9]+$ ]] || die "usage: $0 regen-apiserver-mod v1.MINOR.PATCH"
  go="$(find_go)"; go_env
  minor="v0.${v#v1.}"
  src="$(cd "$PINS" && "$go" mod download -json "k8s.io/kubernetes@$v" | awk -F'"' '$2=="Dir"{print $4}')"
  [[ -f "$src/go.mod" ]] || die "could not download k8s.io/kubernetes@$v"
  local godebug
  godebug="$(grep -E '^godebug ' "$src/go.mod" || true)"
  {
    echo "// Pins the kube-apiserver and kube-controller-manager built by scripts/k8s-bins.sh for tests."
    echo "// k8s.io/kubernetes cannot be 'go install'ed because its go.mod replaces the"
    echo "// staging modules with local paths; here each one is replaced with its published"
    echo "// v0.x release instead. Regenerate with: scripts/k8s-bins.sh regen-apiserver-mod"
    echo "module hookit.dev/tests/k8s-bins/apiserver"
    echo
    grep -E '^go ' "$src/go.mod"
    [[ -n "$godebug" ]] && { echo; echo "$godebug"; }
    echo
    printf 'tool (\n\tk8s.io/kubernetes/cmd/kube-apiserver\n\tk8s.io/kubernetes/cmd/kube-controller-manager\n)\n'
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    echo "replace ("
    grep -E '=> \./staging/' "$src/go.mod" | awk -v m="$minor" '{print "\t" $1 " => " $1 " " m}'
    echo ")"
  } > "$PINS/apiserver/go.mod"
  rm -f "$PINS/apiserver/go.sum"
  (cd "$PINS/apiserver" && "$go" mod tidy)
  log "rewrote $PINS/apiserver/go.mod for $v (staging modules at $minor)"
}

# Once every binary is built, the module and build caches only serve a rebuild
# (a pin change, which recompiles nearly everything anyway), yet they are the
# largest thing a test run leaves on disk. Emptied after a build that built
# something, unless HOOKIT_KEEP_GO_CACHE=1.
BUILT=0
trim_go_caches() {
  [[ "$BUILT" == 1 && "${HOOKIT_KEEP_GO_CACHE:-0}" != 1 && -d "$GO_CACHE_ROOT" ]] || return 0
  local size
  size="$(du -sh "$GO_CACHE_ROOT" 2>/dev/null | cut -f1)"
  rm -rf "$GO_CACHE_ROOT"
  log "emptied the Go caches ($size; HOOKIT_KEEP_GO_CACHE=1 keeps them)"
}

# One build at a time: concurrent test processes may all call this script.
with_lock() {
  mkdir -p "$BIN_DIR"
  exec 9>"$BIN_DIR/.lock"
  if ! flock -n 9; then
    log "another build is running; waiting for it"
    flock 9
  fi
}

cmd="${1:-all}"
case "$cmd" in
  all)
    if ! check_all; then
      with_lock
      build_etcd; k8s_build kube-apiserver; k8s_build kube-controller-manager; build_helm; keda_crds
      k8s_build kubelet "$PINS/node"; k8s_build kube-scheduler "$PINS/node"
      k8s_build kube-proxy "$PINS/node"; build_coredns; build_otelcol
      trim_go_caches
    else
      log "all binaries up to date"
    fi
    echo "$BIN_DIR" ;;
  kube-apiserver|apiserver) with_lock; k8s_build kube-apiserver; echo "$BIN_DIR" ;;
  kube-controller-manager) with_lock; k8s_build kube-controller-manager; echo "$BIN_DIR" ;;
  etcd) with_lock; build_etcd; echo "$BIN_DIR" ;;
  helm) with_lock; build_helm; echo "$BIN_DIR" ;;
  otelcol) with_lock; build_otelcol; trim_go_caches; echo "$BIN_DIR" ;;
  keda-crds) with_lock; keda_crds; echo "$BIN_DIR" ;;
  kubelet)
    with_lock
    k8s_build kubelet "$PINS/node"; k8s_build kube-scheduler "$PINS/node"
    k8s_build kube-proxy "$PINS/node"; build_coredns
    trim_go_caches
    echo "$BIN_DIR" ;;
  check) check_all ;;
  path) echo "$BIN_DIR" ;;
  regen-apiserver-mod) regen_apiserver_mod "${2:-}" ;;
  -h|--help|help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
  *) die "unknown command '$cmd' (try --help)" ;;
esac

#!/usr/bin/env bash
# A throw-away Kubernetes control plane for tests: etcd + kube-apiserver on
# loopback, no kubelet, no controller-manager, no scheduler (the "envtest"
# arrangement). Binaries come from scripts/k8s-bins.sh. With
# KUBE_ENV_CONTROLLERS=1 it also runs kube-controller-manager with the workload
# controllers (Deployments, ReplicaSets, StatefulSets, Jobs, EndpointSlices,
# garbage collection, PersistentVolume binding), so Pods get created for a node
# to run (scripts/kubelet-node.sh).
#
#   scripts/kube-env.sh start DIR    start (or reuse, if already running) an environment in DIR
#   scripts/kube-env.sh stop DIR     stop it; no processes are left behind
#   scripts/kube-env.sh status DIR   exit 0 and print the env if it is running and ready
#
# `start` prints, on stdout, exactly two lines:
#   KUBECONFIG=<DIR>/kubeconfig
#   KUBE_APISERVER_URL=https://<KUBE_ENV_ADDRESS, default 127.0.0.1>:<port>
# and writes <DIR>/env with the same values as `export` lines plus
# KUBE_ADMIN_TOKEN and ETCD_URL. Progress and errors go to stderr.
#
# What it sets up in DIR:
#   pki/          throw-away CA, serving cert (SAN the address, IP:127.0.0.1, DNS:localhost, and
#                 the kubernetes Service's ClusterIP 10.0.0.1 and names),
#                 service-account signing key pair, static token file
#   etcd/         etcd data (wiped on every fresh start)
#   kubeconfig    admin: a static bearer token in group system:masters
#   *.log, *.pid  process logs and pids
# The API server runs with --authorization-mode=RBAC, the ServiceAccount admission
# plugin disabled, and token issuance on (kubectl create token works); the
# default ServiceAccount of namespace default is created, since no
# controller-manager does it.
#
# Environment:
#   K8S_BINS_DIR          where kube-apiserver and etcd are (default
#                         ${HOOKIT_CACHE:-<repo>/.cache}/k8s-bins/bin, as scripts/k8s-bins.sh)
#   KUBE_ENV_NO_BUILD=1   do not call scripts/k8s-bins.sh for missing binaries
#   KUBE_ENV_TIMEOUT      seconds to wait for readiness (default 60)
#   KUBE_ENV_CONTROLLERS=1  also run kube-controller-manager (workload controllers)
#   KUBE_ENV_ADDRESS      the address the API server listens on and advertises
#                         (default 127.0.0.1). Another one (the kubelet node's
#                         bridge address) is put in the serving cert, and the
#                         API server then keeps the `kubernetes` Service's
#                         endpoints pointing at it, so pods reach it through
#                         kube-proxy as in any cluster.
#   KUBE_ENV_SERVICE_ACCOUNTS=1  the ServiceAccount admission plugin on, and
#                         kube-controller-manager publishing the kube-root-ca.crt
#                         ConfigMap, so a real kubelet mounts pods a token (the
#                         kubelet node)
#   KUBE_ENV_WATCH_PID    if set, a watchdog stops the environment once that
#                         process exits (e.g. the test binary's pid), so a
#                         crashed test run leaves nothing running
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${K8S_BINS_DIR:-${HOOKIT_CACHE:-$ROOT/.cache}/k8s-bins/bin}"
TIMEOUT="${KUBE_ENV_TIMEOUT:-60}"
ADDRESS="${KUBE_ENV_ADDRESS:-127.0.0.1}"

log() { printf 'kube-env: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }

abs_dir() { mkdir -p "$1" && (cd "$1" && pwd); }

# A free TCP port on 127.0.0.1 (the kernel picks; a tiny race remains, which
# start() covers by retrying with new ports).
free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    return
  fi
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}

# pid_alive PIDFILE: the process in PIDFILE exists and was started for this DIR.
pid_alive() {
  local f="$1" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$DIR/" || return 1
}

kill_pidfile() {
  local f="$1" name="$2" pid
  if pid_alive "$f"; then
    pid="$(cat "$f")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      [[ -d "/proc/$pid" ]] || break
      # A zombie child of ours is gone for all purposes.
      [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && break
      sleep 0.1
    done
    if [[ -d "/proc/$pid" && "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]; then
      log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do [[ -d "/proc/$pid" ]] || break; sleep 0.1; done
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

ensure_bins() {
  local missing=()
  [[ -x "$BIN_DIR/etcd" ]] || missing+=(etcd)
  [[ -x "$BIN_DIR/kube-apiserver" ]] || missing+=(kube-apiserver)
  if [[ "${KUBE_ENV_CONTROLLERS:-0}" == 1 ]]; then
    [[ -x "$BIN_DIR/kube-controller-manager" ]] || missing+=(kube-controller-manager)
  fi
  if [[ ${#missing[@]} -gt 0 ]]; then
    [[ "${KUBE_ENV_NO_BUILD:-}" == 1 ]] && die "missing ${missing[*]} in $BIN_DIR (run scripts/k8s-bins.sh)"
    log "building ${missing[*]} with scripts/k8s-bins.sh (minutes on a cold cache)"
    for b in "${missing[@]}"; do K8S_BINS_DIR="$BIN_DIR" "$ROOT/scripts/k8s-bins.sh" "$b" >/dev/null; done
  fi
}

make_pki() {
  local pki="$DIR/pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  if [[ ! -s "$pki/ca.crt" || ! -s "$pki/apiserver.crt" || ! -s "$pki/sa.pub" || ! -s "$pki/tokens.csv" ]] \
    || ! grep -q "IP:$ADDRESS," "$pki/apiserver.ext" 2>/dev/null; then
    log "creating throw-away CA, serving cert and service-account keys in $pki"
    (
      cd "$pki"
      umask 077
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.crt -days 3650 -subj "/CN=hookit-test-ca" 2>/dev/null
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
      printf '%s\n' \
        "subjectAltName=IP:$ADDRESS,IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc" \
        "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment" > apiserver.ext
      openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
      openssl genrsa -out sa.key 2048 2>/dev/null
      openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
      printf '%s,admin,admin-uid,"system:masters"\n' "$(openssl rand -hex 24)" > tokens.csv
      rm -f apiserver.csr ca.srl
    )
  fi
}

write_kubeconfig() { # url token
  local ca
  ca="$(base64 -w0 < "$DIR/pki/ca.crt")"
  cat > "$DIR/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: hookit-test
    cluster:
      server: $1
      certificate-authority-data: $ca
users:
  - name: admin
    user:
      token: $2
contexts:
  - name: hookit-test
    context:
      cluster: hookit-test
      user: admin
      namespace: default
current-context: hookit-test
EOF
  mv -f "$DIR/kubeconfig.tmp" "$DIR/kubeconfig"
}

# wait_for NAME SECONDS PIDFILE CMD...: poll CMD until it succeeds, the process dies, or time runs out.
wait_for() {
  local name="$1" secs="$2" pidf="$3"; shift 3
  local deadline=$(( $(date +%s) + secs ))
  while (( $(date +%s) < deadline )); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    pid_alive "$pidf" || { log "$name exited during startup"; return 1; }
    sleep 0.25
  done
  log "$name not ready after ${secs}s"
  return 1
}

print_env() {
  # shellcheck disable=SC1091
  source "$DIR/env"
  echo "KUBECONFIG=$KUBECONFIG"
  echo "KUBE_APISERVER_URL=$KUBE_APISERVER_URL"
}

is_ready() {
  [[ -f "$DIR/env" ]] || return 1
  pid_alive "$DIR/etcd.pid" && pid_alive "$DIR/kube-apiserver.pid" || return 1
  if [[ "${KUBE_ENV_CONTROLLERS:-0}" == 1 ]]; then
    pid_alive "$DIR/kube-controller-manager.pid" || return 1
  fi
  local url token
  url="$(sed -n 's/^export KUBE_APISERVER_URL=//p' "$DIR/env")"
  token="$(sed -n 's/^export KUBE_ADMIN_TOKEN=//p' "$DIR/env")"
  [[ "$(curl -sS --max-time 5 --cacert "$DIR/pki/ca.crt" -H "Authorization: Bearer $token" "$url/readyz" 2>/dev/null)" == ok ]]
}

start_once() {
  local etcd_port peer_port api_port token url
  etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"
  while [[ "$peer_port" == "$etcd_port" ]]; do peer_port="$(free_port)"; done
  while [[ "$api_port" == "$etcd_port" || "$api_port" == "$peer_port" ]]; do api_port="$(free_port)"; done
  token="$(cut -d, -f1 "$DIR/pki/tokens.csv")"
  url="https://$ADDRESS:$api_port"

  rm -rf "$DIR/etcd"
  log "starting etcd on 127.0.0.1:$etcd_port"
  setsid "$BIN_DIR/etcd" \
    --name hookit-test \
    --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "hookit-test=http://127.0.0.1:$peer_port" \
    --initial-cluster-state new \
    --unsafe-no-fsync \
    --log-level warn \
    </dev/null >"$DIR/etcd.log" 2>&1 &
  echo $! > "$DIR/etcd.pid"
  if ! wait_for etcd 30 "$DIR/etcd.pid" curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health"; then
    tail -n 20 "$DIR/etcd.log" >&2 || true
    return 1
  fi

  log "starting kube-apiserver on $ADDRESS:$api_port"
  # On loopback nothing but the host can use the `kubernetes` Service's
  # endpoints, so none are kept; on another address (a node's pods reach it),
  # the API server keeps them, as in any cluster.
  local reconciler=none admission=(--disable-admission-plugins ServiceAccount)
  [[ "$ADDRESS" != 127.0.0.1 ]] && reconciler=lease
  [[ "${KUBE_ENV_SERVICE_ACCOUNTS:-0}" == 1 ]] && admission=()
  setsid "$BIN_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$ADDRESS" \
    --advertise-address "$ADDRESS" \
    --secure-port "$api_port" \
    --cert-dir "$DIR/pki" \
    --tls-cert-file "$DIR/pki/apiserver.crt" \
    --tls-private-key-file "$DIR/pki/apiserver.key" \
    --client-ca-file "$DIR/pki/ca.crt" \
    --token-auth-file "$DIR/pki/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-key-file "$DIR/pki/sa.pub" \
    --service-account-signing-key-file "$DIR/pki/sa.key" \
    --service-account-issuer "$url" \
    --api-audiences "$url" \
    "${admission[@]}" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --endpoint-reconciler-type "$reconciler" \
    --allow-privileged=true \
    --enable-priority-and-fairness=false \
    --profiling=false \
    </dev/null >"$DIR/kube-apiserver.log" 2>&1 &
  echo $! > "$DIR/kube-apiserver.pid"

  cat > "$DIR/env" <<EOF
export KUBECONFIG=$DIR/kubeconfig
export KUBE_APISERVER_URL=$url
export KUBE_ADMIN_TOKEN=$token
export ETCD_URL=http://127.0.0.1:$etcd_port
EOF
  write_kubeconfig "$url" "$token"

  local readyz=(sh -c "[ \"\$(curl -sS --max-time 2 --cacert '$DIR/pki/ca.crt' -H 'Authorization: Bearer $token' '$url/readyz')\" = ok ]")
  if ! wait_for kube-apiserver "$TIMEOUT" "$DIR/kube-apiserver.pid" "${readyz[@]}"; then
    tail -n 30 "$DIR/kube-apiserver.log" >&2 || true
    return 1
  fi

  # No controller-manager: create the default ServiceAccount so that
  # `kubectl create token default -n default` works.
  local sa_body='{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default","namespace":"default"}}'
  local code
  code="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' --cacert "$DIR/pki/ca.crt" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -X POST -d "$sa_body" "$url/api/v1/namespaces/default/serviceaccounts")"
  [[ "$code" == 201 || "$code" == 409 ]] || { log "creating ServiceAccount default/default returned HTTP $code"; return 1; }
  if [[ "${KUBE_ENV_CONTROLLERS:-0}" == 1 ]]; then
    start_controllers || return 1
  fi
  return 0
}

# The workload controllers, and those a node's pods need (ServiceAccounts, the
# root CA ConfigMap, PersistentVolume binding): no node lifecycle (the
# not-ready taint is removed by scripts/kubelet-node.sh), no cloud controllers.
start_controllers() {
  local port controllers
  port="$(free_port)"
  # The PersistentVolume binder too: examples/postgres.yaml asks for a volume,
  # which the kubelet node provides as a pre-made PersistentVolume.
  controllers=deployment-controller,replicaset-controller,statefulset-controller,job-controller
  controllers+=,endpointslice-controller,garbage-collector-controller,serviceaccount-controller
  controllers+=,persistentvolume-binder-controller
  [[ "${KUBE_ENV_SERVICE_ACCOUNTS:-0}" == 1 ]] && controllers+=,root-ca-certificate-publisher-controller
  log "starting kube-controller-manager on 127.0.0.1:$port"
  setsid "$BIN_DIR/kube-controller-manager" \
    --kubeconfig "$DIR/kubeconfig" \
    --authentication-kubeconfig "$DIR/kubeconfig" \
    --authorization-kubeconfig "$DIR/kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "$port" \
    --cert-dir "$DIR/pki/kcm" \
    --leader-elect=false \
    --use-service-account-credentials=false \
    --controllers "$controllers" \
    --root-ca-file "$DIR/pki/ca.crt" \
    --concurrent-deployment-syncs 2 \
    --profiling=false \
    </dev/null >"$DIR/kube-controller-manager.log" 2>&1 &
  echo $! > "$DIR/kube-controller-manager.pid"
  if ! wait_for kube-controller-manager "$TIMEOUT" "$DIR/kube-controller-manager.pid" \
      curl -fsSk --max-time 2 "https://127.0.0.1:$port/healthz"; then
    tail -n 30 "$DIR/kube-controller-manager.log" >&2 || true
    return 1
  fi
}

start_watchdog() {
  local pid="${KUBE_ENV_WATCH_PID:-}"
  [[ -n "$pid" ]] || return 0
  [[ "$pid" =~ ^[0-9]+$ ]] || die "KUBE_ENV_WATCH_PID must be a pid"
  kill_pidfile "$DIR/watchdog.pid" watchdog
  setsid bash "$0" __watch "$DIR/" "$pid" </dev/null >>"$DIR/watchdog.log" 2>&1 &
  echo $! > "$DIR/watchdog.pid"
  log "watchdog (pid $!) stops this environment when pid $pid exits"
}

cmd_start() {
  umask 077   # the env file and kubeconfig carry the admin token
  if is_ready; then
    log "already running in $DIR"
    start_watchdog
    print_env
    return 0
  fi
  # Half-started or dead leftovers: clean them up first.
  kill_pidfile "$DIR/kube-controller-manager.pid" kube-controller-manager
  kill_pidfile "$DIR/kube-apiserver.pid" kube-apiserver
  kill_pidfile "$DIR/etcd.pid" etcd
  rm -f "$DIR/env"
  ensure_bins
  command -v openssl >/dev/null || die "openssl is required"
  command -v curl >/dev/null || die "curl is required"
  make_pki
  local start attempt
  start=$(date +%s)
  for attempt in 1 2 3; do
    if start_once; then
      log "ready in $(( $(date +%s) - start ))s (logs: $DIR/*.log; stop: scripts/kube-env.sh stop $DIR)"
      start_watchdog
      print_env
      return 0
    fi
    log "start attempt $attempt failed; cleaning up"
    kill_pidfile "$DIR/kube-controller-manager.pid" kube-controller-manager
    kill_pidfile "$DIR/kube-apiserver.pid" kube-apiserver
    kill_pidfile "$DIR/etcd.pid" etcd
    rm -f "$DIR/env"
  done
  die "could not start the control plane (see $DIR/etcd.log and $DIR/kube-apiserver.log)"
}

cmd_stop() {
  kill_pidfile "$DIR/kube-controller-manager.pid" kube-controller-manager
  kill_pidfile "$DIR/kube-apiserver.pid" kube-apiserver
  kill_pidfile "$DIR/etcd.pid" etcd
  rm -f "$DIR/env"
  rm -rf "$DIR/etcd"
  # The watchdog last, and not when it is the one calling stop.
  if [[ "$(cat "$DIR/watchdog.pid" 2>/dev/null)" == "${KUBE_ENV_WATCHDOG_SELF:-}" ]]; then
    rm -f "$DIR/watchdog.pid"
  else
    kill_pidfile "$DIR/watchdog.pid" watchdog
  fi
}

# Internal: __watch DIR/ PID -- poll PID, then stop the environment.
cmd_watch() {
  local pid="$1"
  while kill -0 "$pid" 2>/dev/null; do sleep 1; done
  log "watched pid $pid exited; stopping $DIR"
  KUBE_ENV_WATCHDOG_SELF=$$ cmd_stop
}

if [[ "${1:-}" == __watch && $# -eq 3 ]]; then
  DIR="$(abs_dir "$2")"
  cmd_watch "$3"
  exit 0
fi
[[ $# -eq 2 ]] || usage
case "$1" in
  start|stop|status) ;;
  *) usage ;;
esac
DIR="$(abs_dir "$2")"
case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) if is_ready; then print_env; else log "not running in $DIR"; exit 1; fi ;;
esac

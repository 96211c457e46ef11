#!/usr/bin/env bash
# The operator at scale: N WebhookEndpoints (default 10,000) across 100 namespaces,
# applied with kubectl to a throw-away kube-apiserver (scripts/kube-env.sh), reconciled
# by a real `hookit controller` into a real PostgreSQL (that of `hookit standalone`).
# Prints, as `key value` lines:
#   ready_secs           from the first kubectl apply until every resource is Ready=True
#   controller_rss_mib   the controller's peak RSS (VmHWM); also the peak until all
#                        are Ready (_at_ready) and the RSS after the steady state (_steady)
#   reconciles           hookit_controller_reconciles_total until then
#   apiserver_requests_per_endpoint, status_writes   from the apiserver's own metrics
#   steady_reconciles_per_s, steady_status_writes     over STEADY seconds afterwards
#   steady_feed_looks    looks of the delivery change feed in that time (it keeps
#                        looking; it only finds nothing to reconcile)
#   rotation_secs        1,000 signing Secrets rewritten at once, until the database
#                        signs with every new secret
#
#   scripts/operator-scale.sh [N]        (needs a release build: cargo build --release)
#
# Environment: HOOKIT_BIN (default target/release/hookit), STEADY (default 70: longer
# than the 60 s between two looks of the controller's delivery change feed),
# ROTATE (default 1000), KEEP=1 to leave the environment running,
# APPLY=server-side (default; what Flux and Argo CD's ServerSideApply do: one PATCH
# per object) or client-side (kubectl's classic apply: a GET, then a create, per
# object), PARALLEL (default 8: kubectl processes at a time, each given an equal share of
# the namespace files).
# The controller's RSS is sampled every 0.5 s into the work dir (rss.tsv), and the
# peak of each phase is printed (controller_rss_mib_{apply,steady,rotation}).
# Everything listens on 127.0.0.1 and stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-10000}"
NAMESPACES=100
PER_NS=$(( (N + NAMESPACES - 1) / NAMESPACES ))
STEADY="${STEADY:-70}"
ROTATE="${ROTATE:-1000}"
APPLY="${APPLY:-server-side}"
PARALLEL="${PARALLEL:-8}"
case "$APPLY" in
  server-side) apply_flags=(--server-side --field-manager=operator-scale) ;;
  client-side) apply_flags=() ;;
  *) echo "operator-scale: APPLY must be server-side or client-side, not '$APPLY'" >&2; exit 2 ;;
esac
BIN="${HOOKIT_BIN:-target/release/hookit}"
[ -x "$BIN" ] || { echo "operator-scale: build first: cargo build --release" >&2; exit 2; }

work="$(mktemp -d -t hookit-opscale-XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ]; then
    scripts/kube-env.sh stop "$work/kube" >/dev/null 2>&1 || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT
log() { printf 'operator-scale: %s\n' "$*" >&2; }
now() { date +%s.%N; }
metric() { # url name-regex: sum of the matching samples
  curl -fsS ${3:+-H "Authorization: Bearer $3"} ${3:+-k} "$1" | awk -v re="$2" '$1 ~ re { s += $2 } END { printf "%.0f\n", s }'
}

# The control plane, the database and the controller.
scripts/kube-env.sh start "$work/kube" >/dev/null
# shellcheck disable=SC1091
. "$work/kube/env"
kubectl apply --server-side -f crds/webhookendpoint.yaml >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/webhookendpoints.hookit.dev >/dev/null

api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# (Root runs the embedded server as the postgres account; the data dir must be
# reachable for it.)
chmod 755 "$work"
HOOKIT_DATA_DIR="$work/data" HOOKIT_LISTEN="127.0.0.1:$api_port" HOOKIT_LOG_FORMAT=json RUST_LOG=warn \
  "$BIN" standalone >"$work/standalone.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do
  curl -fsS "http://127.0.0.1:$api_port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
DATABASE_URL="$(cat "$work/data/database.url")"
MASTER_KEY="$(cat "$work/data/master.key")"

DATABASE_URL="$DATABASE_URL" HOOKIT_MASTER_KEY="$MASTER_KEY" HOOKIT_ALLOW_PRIVATE_TARGETS=127.0.0.0/8 \
  HOOKIT_METRICS_LISTEN="127.0.0.1:$metrics_port" POD_NAMESPACE=default POD_NAME=scale \
  HOOKIT_LOG_FORMAT=json RUST_LOG=warn "$BIN" controller >"$work/controller.log" 2>&1 &
ctl=$!
pids+=("$ctl")
for _ in $(seq 300); do
  [ "$(metric "http://127.0.0.1:$metrics_port/metrics" '^hookit_controller_leader')" = 1 ] && break
  sleep 0.1
done
log "controller leading; applying $N WebhookEndpoints in $NAMESPACES namespaces ($APPLY, $PARALLEL kubectl at a time)"

# The controller's RSS over time (t in s since start, VmRSS in KiB), to see which
# phase sets the peak.
phase() { echo "$1" >"$work/phase"; }
phase start
(
  t0=$(date +%s%N)
  while [ -r "/proc/$ctl/status" ]; do
    rss=$(awk '/VmRSS/ { print $2 }' "/proc/$ctl/status" 2>/dev/null) || break
    printf '%s\t%s\t%s\n' "$(( ($(date +%s%N) - t0) / 1000000 ))" "$(cat "$work/phase")" "$rss"
    sleep 0.5
  done
) >"$work/rss.tsv" 2>/dev/null &
pids+=($!)
phase_peak() { awk -v p="$1" -F'\t' '$2 == p && $3 > m { m = $3 } END { printf "%.0f\n", m / 1024 }' "$work/rss.tsv"; }

# Manifests: one file per namespace (its Namespace first).
mkdir -p "$work/manifests"
for ((n = 0; n < NAMESPACES; n++)); do
  {
    printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: scale-%02d\n' "$n"
    for ((i = 0; i < PER_NS && n * PER_NS + i < N; i++)); do
      printf -- '---\napiVersion: hookit.dev/v1alpha1\nkind: WebhookEndpoint\nmetadata:\n  name: ep-%03d\n  namespace: scale-%02d\nspec:\n  url: http://127.0.0.1:9/scale-%02d/ep-%03d\n' "$i" "$n" "$n" "$i"
    done
  } >"$work/manifests/ns-$n.yaml"
done

apiserver_metrics="$KUBE_APISERVER_URL/metrics"
req0=$(metric "$apiserver_metrics" '^apiserver_request_total' "$KUBE_ADMIN_TOKEN")
status0=$(metric "$apiserver_metrics" '^apiserver_request_total.*resource="webhookendpoints".*subresource="status"' "$KUBE_ADMIN_TOKEN")
# CPU seconds a process has used (user + system), and the machine's busy CPU
# seconds (all but idle and iowait): where the cores went until all were Ready.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f\n", ($14 + $15) / hz }' "/proc/$1/stat"; }
cpu_busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.1f\n", ($2 + $3 + $4 + $7 + $8) / hz }' /proc/stat; }
api_pid=$(cat "$work/kube/kube-apiserver.pid"); etcd_pid=$(cat "$work/kube/etcd.pid")
cpu0=($(cpu_of "$api_pid") $(cpu_of "$etcd_pid") $(cpu_of "$ctl") $(cpu_busy))

phase apply
start=$(now)
# kubectl, as a user would, several at a time; each process applies its share
# of the namespaces' files in one run (one start-up, one discovery). `time`
# reports the CPU of the kubectl processes.
TIMEFORMAT='%U %S'
{ time (ls "$work"/manifests/*.yaml | APPLY_FLAGS="${apply_flags[*]}" \
  xargs -P "$PARALLEL" -n $(( (NAMESPACES + PARALLEL - 1) / PARALLEL )) \
  sh -c 'for f; do set -- "$@" -f "$f"; shift; done; kubectl apply $APPLY_FLAGS "$@" >/dev/null' sh) ; } 2>"$work/kubectl.time"
applied=$(now)
ready=0
for _ in $(seq 1200); do
  ready=$(kubectl get webhookendpoints -A -o jsonpath='{range .items[*]}{.status.conditions[0].status}{"\n"}{end}' | grep -c '^True$' || true)
  [ "$ready" -ge "$N" ] && break
  sleep 1
done
done_at=$(now)
[ "$ready" -ge "$N" ] || { log "only $ready of $N Ready after 20 minutes"; exit 1; }
req1=$(metric "$apiserver_metrics" '^apiserver_request_total' "$KUBE_ADMIN_TOKEN")
status1=$(metric "$apiserver_metrics" '^apiserver_request_total.*resource="webhookendpoints".*subresource="status"' "$KUBE_ADMIN_TOKEN")
rec1=$(metric "http://127.0.0.1:$metrics_port/metrics" '^hookit_controller_reconciles_total')

echo "endpoints $N"
echo "apply_secs $(echo "$applied - $start" | bc)"
echo "ready_secs $(echo "$done_at - $start" | bc)"
echo "reconciles $rec1"
echo "apiserver_requests_per_endpoint $(echo "scale=2; ($req1 - $req0) / $N" | bc)"
echo "status_writes $((status1 - status0))"
cpu1=($(cpu_of "$api_pid") $(cpu_of "$etcd_pid") $(cpu_of "$ctl") $(cpu_busy))
echo "cpu_secs_kubectl $(awk '{ printf "%.1f\n", $1 + $2 }' "$work/kubectl.time")"
echo "cpu_secs_apiserver $(echo "${cpu1[0]} - ${cpu0[0]}" | bc)"
echo "cpu_secs_etcd $(echo "${cpu1[1]} - ${cpu0[1]}" | bc)"
echo "cpu_secs_controller $(echo "${cpu1[2]} - ${cpu0[2]}" | bc)"
echo "cpu_secs_machine $(echo "${cpu1[3]} - ${cpu0[3]}" | bc) (of $(echo "($done_at - $start) * $(nproc)" | bc | cut -d. -f1) available)"
# The peak so far, and what the controller holds once converged: which phase
# sets the final peak, and how much of it is transient.
echo "controller_rss_mib_at_ready $(awk '/VmHWM/ { printf "%.0f\n", $2 / 1024 }' "/proc/$ctl/status")"

# Steady state: nothing changes, so nothing should be written.
phase steady
sleep 5
rec2=$(metric "http://127.0.0.1:$metrics_port/metrics" '^hookit_controller_reconciles_total')
looks2=$(metric "http://127.0.0.1:$metrics_port/metrics" '^hookit_controller_feed_polls_total.*result="ok"')
status2=$(metric "$apiserver_metrics" '^apiserver_request_total.*resource="webhookendpoints".*subresource="status"' "$KUBE_ADMIN_TOKEN")
sleep "$STEADY"
rec3=$(metric "http://127.0.0.1:$metrics_port/metrics" '^hookit_controller_reconciles_total')
looks3=$(metric "http://127.0.0.1:$metrics_port/metrics" '^hookit_controller_feed_polls_total.*result="ok"')
failed_looks=$(metric "http://127.0.0.1:$metrics_port/metrics" '^hookit_controller_feed_polls_total.*result="error"')
status3=$(metric "$apiserver_metrics" '^apiserver_request_total.*resource="webhookendpoints".*subresource="status"' "$KUBE_ADMIN_TOKEN")
echo "steady_reconciles_per_s $(echo "scale=1; ($rec3 - $rec2) / $STEADY" | bc)"
echo "steady_status_writes $((status3 - status2))"
echo "steady_feed_looks $((looks3 - looks2))"
echo "feed_looks_failed $failed_looks"
echo "controller_rss_mib_steady $(awk '/VmRSS/ { printf "%.0f\n", $2 / 1024 }' "/proc/$ctl/status")"

# Rotation storm: ROTATE generated signing Secrets rewritten at once, by one
# client with 16 keep-alive connections straight to the API (a kubectl or curl
# process per Secret would measure process start-up, not the controller).
phase rotation
rot_start=$(now)
URL="$KUBE_APISERVER_URL" TOKEN="$KUBE_ADMIN_TOKEN" CA="$work/kube/pki/ca.crt" python3 - "$ROTATE" "$NAMESPACES" <<'PY'
import base64, http.client, json, os, ssl, sys, threading, urllib.parse
rotate, namespaces = int(sys.argv[1]), int(sys.argv[2])
url = urllib.parse.urlsplit(os.environ["URL"])
tls = ssl.create_default_context(cafile=os.environ["CA"])
headers = {"Authorization": "Bearer " + os.environ["TOKEN"],
           "Content-Type": "application/merge-patch+json"}
todo = [(f"scale-{k % namespaces:02d}", f"ep-{k // namespaces:03d}-signing") for k in range(rotate)]
lock, failed = threading.Lock(), []
def run():
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=tls, timeout=30)
    while True:
        with lock:
            if not todo:
                return
            ns, name = todo.pop()
        body = json.dumps({"stringData": {"secret": "whsec_" + base64.b64encode(os.urandom(24)).decode()}})
        conn.request("PATCH", f"/api/v1/namespaces/{ns}/secrets/{name}", body, headers)
        r = conn.getresponse(); r.read()
        if r.status != 200:
            with lock:
                failed.append(f"{ns}/{name}: {r.status}")
threads = [threading.Thread(target=run) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
if failed:
    sys.exit("rotation writes failed: " + ", ".join(failed[:5]))
PY
rot_written=$(now)
psql_bin=$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | head -1)
psql_bin="${psql_bin:-psql}"
rotated=0
for _ in $(seq 600); do
  rotated=$("$psql_bin" -tA "$DATABASE_URL" -c "SELECT count(*) FROM endpoints WHERE prev_secret_expires_at > now()")
  [ "$rotated" -ge "$ROTATE" ] && break
  sleep 0.5
done
rot_done=$(now)
echo "rotation_write_secs $(echo "$rot_written - $rot_start" | bc)"
echo "rotation_secs $(echo "$rot_done - $rot_start" | bc)"
echo "rotated $rotated"
phase end
echo "controller_rss_mib $(awk '/VmHWM/ { printf "%.0f\n", $2 / 1024 }' "/proc/$ctl/status")"
for p in apply steady rotation; do echo "controller_rss_mib_$p $(phase_peak "$p")"; done
# A look of the change feed that failed means the figures above were taken
# without it (its memory and its database work missing): not a valid run.
[ "$failed_looks" = 0 ] || { log "the delivery change feed failed $failed_looks looks (see $work/controller.log)"; exit 1; }

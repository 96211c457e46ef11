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
# ROTATE (default 1000), KEEP=1 to leave the environment running.
# Everything listens on 127.0.0.1 and stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-10000}"
NAMESPACES=100
PER_NS=$(( (N + NAMESPACES - 1) / NAMESPACES ))
STEADY="${STEADY:-70}"
ROTATE="${ROTATE:-1000}"
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
log "controller leading; applying $N WebhookEndpoints in $NAMESPACES namespaces"

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
start=$(now)
# kubectl, as a user would, several at a time.
ls "$work"/manifests/*.yaml | xargs -P 4 -n 10 sh -c 'for f; do kubectl apply -f "$f" >/dev/null; done' sh
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
# The peak so far, and what the controller holds once converged: which phase
# sets the final peak, and how much of it is transient.
echo "controller_rss_mib_at_ready $(awk '/VmHWM/ { printf "%.0f\n", $2 / 1024 }' "/proc/$ctl/status")"

# Steady state: nothing changes, so nothing should be written.
sleep 5
rec2=$(metric "http://127.0.0.1:$metrics_port/metrics" '^hookit_controller_reconciles_total')
looks2=$(metric "http://127.0.0.1:$metrics_port/metrics" '^hookit_controller_feed_polls_total')
status2=$(metric "$apiserver_metrics" '^apiserver_request_total.*resource="webhookendpoints".*subresource="status"' "$KUBE_ADMIN_TOKEN")
sleep "$STEADY"
rec3=$(metric "http://127.0.0.1:$metrics_port/metrics" '^hookit_controller_reconciles_total')
looks3=$(metric "http://127.0.0.1:$metrics_port/metrics" '^hookit_controller_feed_polls_total')
status3=$(metric "$apiserver_metrics" '^apiserver_request_total.*resource="webhookendpoints".*subresource="status"' "$KUBE_ADMIN_TOKEN")
echo "steady_reconciles_per_s $(echo "scale=1; ($rec3 - $rec2) / $STEADY" | bc)"
echo "steady_status_writes $((status3 - status2))"
echo "steady_feed_looks $((looks3 - looks2))"
echo "controller_rss_mib_steady $(awk '/VmRSS/ { printf "%.0f\n", $2 / 1024 }' "/proc/$ctl/status")"

# Rotation storm: ROTATE generated signing Secrets rewritten at once.
rot_start=$(now)
for ((k = 0; k < ROTATE; k++)); do
  n=$((k % NAMESPACES)); i=$((k / NAMESPACES))
  printf '%s %s\n' "$(printf 'scale-%02d' "$n")" "$(printf 'ep-%03d-signing' "$i")"
done | URL="$KUBE_APISERVER_URL" TOKEN="$KUBE_ADMIN_TOKEN" xargs -P 16 -n 2 sh -c '
  # Straight to the API (a kubectl process per Secret would measure kubectl).
  curl -fsSk -o /dev/null -X PATCH -H "Authorization: Bearer $TOKEN" \
    -H "Content-Type: application/merge-patch+json" \
    -d "{\"stringData\":{\"secret\":\"whsec_$(head -c 24 /dev/urandom | base64)\"}}" \
    "$URL/api/v1/namespaces/$1/secrets/$2"' sh
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
echo "controller_rss_mib $(awk '/VmHWM/ { printf "%.0f\n", $2 / 1024 }' "/proc/$ctl/status")"

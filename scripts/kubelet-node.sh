#!/usr/bin/env bash
# A real single-node Kubernetes on this kind of machine: a kube-env control plane
# (etcd, kube-apiserver, kube-controller-manager), kube-scheduler, a real
# kubelet running pods through Debian's containerd 1.6 and runc 1.1 with the
# bridge CNI plugin, kube-proxy (iptables mode) for Services, and CoreDNS as the
# cluster DNS. kubelet, kube-scheduler and kube-proxy are built from the repo's
# k8s.io/kubernetes pin, CoreDNS from its module (scripts/k8s-bins.sh kubelet).
# No registry is reached: images are imported from docker-archive tars, and
# `start` imports, besides the pause image, stand-ins for the two public images
# the examples name (scripts/node-images.sh).
#
# Pods get ServiceAccount tokens (kube-env's KUBE_ENV_SERVICE_ACCOUNTS), reach
# the API server through the `kubernetes` Service (the API server listens on
# the bridge's 10.244.0.1), resolve <svc>.<ns>.svc.cluster.local through
# CoreDNS on 10.244.0.1:53, and a StatefulSet's 1Gi claim binds to a hostPath
# PersistentVolume made by `start` (as kind's local-path provisioner would).
# The README test (tests/it/operator/install.rs) and the kubelet test
# (tests/it/operator/kubelet.rs) run on it; docs/kubernetes.md ("A real
# kubelet") says what was tried.
#
#   scripts/kubelet-node.sh start DIR            start everything; waits for Node Ready
#                                                (pods get 10.244.0.x; the host is 10.244.0.1)
#   scripts/kubelet-node.sh import DIR TAR...    import docker-archive images
#   scripts/kubelet-node.sh stop DIR             stop everything, undo the host changes
#
# Needs root. What it changes on the host while it runs, all undone by `stop`:
# the kubelet sets vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1
# (saved first, restored), the bridge plugin sets net.ipv4.ip_forward=1; a bridge
# `hk-cni0` with 10.244.0.1/24 (pods get 10.244.0.x; no masquerade, no port
# mapping: traffic stays on this machine) and a route for the Service range
# 10.0.0.0/24 through it (so the host's own requests to a ClusterIP never leave
# through another interface); the KUBE-* iptables chains of the kubelet and
# kube-proxy; cgroups /kubepods and /k8s.io; /var/lib/kubelet, /var/log/pods,
# /var/log/containers, /var/lib/cni, /run/netns/cni-*.
#
# Settings this machine needs (each found by trying; see docs/kubernetes.md):
# - `failCgroupV1: false`: kubelet 1.35 refuses a cgroup v1 host otherwise.
# - containerd `restrict_oom_score_adj = true`: root here lacks CAP_SYS_RESOURCE,
#   so runc cannot lower a sandbox's oom_score_adj to -998 ("can't get final
#   child's PID from pipe: EOF").
# - The node's `not-ready` taint is removed by hand once Ready (kube-env runs no
#   node-lifecycle controller).
# Chosen rather than found by trying:
# - kube-proxy leaves the conntrack sysctls alone (`maxPerCore: 0`, timeouts 0):
#   they are the host's, and `stop` would have to restore them.
# - CoreDNS answers cluster.local only, on the bridge address, and forwards
#   nothing: a name outside the cluster gets an error, and no query leaves the
#   machine.
# Do not use `kubectl logs`/`exec`/`port-forward` against this node: the API
# server would look the node's name up in the machine's DNS resolver (the
# kubelet serves on 127.0.0.1, so it would fail anyway); read the container
# logs under /var/log/pods instead.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE=hookit-kubelet
BRIDGE=hk-cni0
POD_CIDR=10.244.0.0/24
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward
  net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables)
HOST_IP="${POD_CIDR%.0/24}.1"
SERVICE_CIDR=10.0.0.0/24
# Host directories the kubelet, containerd and CNI create outside DIR; `stop`
# removes those that did not exist before `start`.
HOST_DIRS=(/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /usr/libexec/kubernetes /opt/containerd)

log() { printf 'kubelet-node: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }

[[ $# -ge 2 ]] || usage
cmd="$1"
mkdir -p "$2"
DIR="$(cd "$2" && pwd)"
shift 2
SOCK="$DIR/containerd/containerd.sock"

need_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  command -v iptables >/dev/null || missing+=(iptables)
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

write_configs() {
  mkdir -p "$DIR/containerd" "$DIR/cni/net.d" "$DIR/kubelet" "$DIR/manifests"
  cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:3.10"
  enable_cdi = false
  # Root here has no CAP_SYS_RESOURCE: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
EOF
  # Pods route their own subnet and the Service range (to kube-proxy's rules on
  # the host), nothing else: with no default route and no masquerade, no pod
  # traffic can leave the machine.
  cat >"$DIR/cni/net.d/10-hookit.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "hookit-pods",
  "plugins": [
    { "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$POD_CIDR" }]], "dataDir": "$DIR/cni/ipam",
                "routes": [{ "dst": "$SERVICE_CIDR" }] } }
  ]
}
EOF
  cat >"$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
failSwapOn: false
staticPodPath: $DIR/manifests
podCIDR: $POD_CIDR
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
clusterDNS: [$HOST_IP]
clusterDomain: cluster.local
# The host's resolv.conf is not the pods' business: its search domains and
# servers would send their lookups off the machine.
resolvConf: ""
EOF
  cat >"$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $KUBECONFIG
hostnameOverride: $NODE
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
nodePortAddresses: ["$HOST_IP/32"]
iptables:
  # Else it sets net.ipv4.conf.all.route_localnet=1 for NodePorts on 127.0.0.1.
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
  cat >"$DIR/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 {
  bind $HOST_IP
  ready 127.0.0.1:$DNS_READY_PORT
  errors
  cache 5
  kubernetes cluster.local in-addr.arpa {
    kubeconfig $KUBECONFIG hookit-test
  }
}
.:53 {
  bind $HOST_IP
  errors
}
EOF
}

# The StatefulSet of examples/postgres.yaml claims 1Gi with no storage class;
# kind's local-path provisioner would make a hostPath volume for it. Here one
# is made in advance.
make_volumes() {
  mkdir -p "$DIR/volumes/pv0"
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: hookit-node-pv0
spec:
  capacity:
    storage: 2Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath:
    path: $DIR/volumes/pv0
    type: Directory
EOF
}

import_images() {
  local t
  for t in "$@"; do
    ctr -a "$SOCK" -n k8s.io images import "$t" >/dev/null || die "could not import $t"
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # what seconds command...
  local what="$1" secs="$2" i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$what not ready after ${secs}s (logs in $DIR)"
}

node_ready() {
  [[ "$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

start() {
  [[ "$(id -u)" -eq 0 ]] || die "run as root (containerd and the kubelet need it)"
  need_packages
  local bins
  bins="$("$ROOT/scripts/k8s-bins.sh" kubelet | tail -n 1)"
  if [[ ! -f "$DIR/sysctl-saved" ]]; then
    for k in "${SYSCTLS[@]}"; do
      if sysctl -n "$k" >/dev/null 2>&1; then echo "$k=$(sysctl -n "$k")"; fi
    done >"$DIR/sysctl-saved"
    for d in "${HOST_DIRS[@]}"; do [[ -e "$d" ]] || echo "$d"; done >"$DIR/host-dirs-created"
  fi
  # The pods' bridge, made first: the API server and the DNS server listen on
  # its address, and services for the pods (a database, a receiver) can too.
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$HOST_IP/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$HOST_IP"
  KUBE_ENV_CONTROLLERS=1 KUBE_ENV_ADDRESS="$HOST_IP" KUBE_ENV_SERVICE_ACCOUNTS=1 \
    "$ROOT/scripts/kube-env.sh" start "$DIR/kube" >/dev/null
  # shellcheck disable=SC1091
  . "$DIR/kube/env"
  PROXY_HEALTHZ_PORT="$(free_port)"
  PROXY_METRICS_PORT="$(free_port)"
  DNS_READY_PORT="$(free_port)"
  "$ROOT/scripts/node-images.sh" "$DIR/images"
  write_configs
  log "starting containerd"
  setsid containerd --config "$DIR/containerd/config.toml" </dev/null >"$DIR/containerd.log" 2>&1 &
  echo $! >"$DIR/containerd.pid"
  wait_for containerd 30 ctr -a "$SOCK" version
  import_images "$DIR/images/pause.tar" "$DIR/images/postgres.tar" "$DIR/images/echo.tar"
  log "starting kube-scheduler"
  setsid "$bins/kube-scheduler" --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" \
    --authorization-kubeconfig "$KUBECONFIG" --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
    </dev/null >"$DIR/kube-scheduler.log" 2>&1 &
  echo $! >"$DIR/kube-scheduler.pid"
  log "starting the kubelet"
  setsid "$bins/kubelet" --config "$DIR/kubelet/config.yaml" --kubeconfig "$KUBECONFIG" \
    --root-dir "$DIR/kubelet/root" --cert-dir "$DIR/kubelet/pki" --hostname-override "$NODE" \
    --node-ip "$HOST_IP" </dev/null >"$DIR/kubelet.log" 2>&1 &
  echo $! >"$DIR/kubelet.pid"
  log "starting kube-proxy and CoreDNS"
  setsid "$bins/kube-proxy" --config "$DIR/kube-proxy.yaml" </dev/null >"$DIR/kube-proxy.log" 2>&1 &
  echo $! >"$DIR/kube-proxy.pid"
  setsid "$bins/coredns" -conf "$DIR/Corefile" </dev/null >"$DIR/coredns.log" 2>&1 &
  echo $! >"$DIR/coredns.pid"
  wait_for "node $NODE" 120 node_ready
  kubectl taint node "$NODE" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  wait_for kube-proxy 60 curl -fsS "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
  wait_for CoreDNS 60 curl -fsS "http://127.0.0.1:$DNS_READY_PORT/ready"
  make_volumes
  log "node $NODE is Ready (KUBECONFIG=$KUBECONFIG)"
  echo "KUBECONFIG=$KUBECONFIG"
}

kill_pidfile() {
  local f="$1" p i
  [[ -f "$f" ]] || return 0
  p="$(cat "$f")"
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop() {
  # A teardown goes on past what fails (a grep that finds nothing, a link
  # already gone): everything it can undo, it undoes.
  set +e +o pipefail
  kill_pidfile "$DIR/kube-scheduler.pid"
  kill_pidfile "$DIR/kubelet.pid"
  # Before the iptables clean-up below, so that it does not write its rules back.
  kill_pidfile "$DIR/kube-proxy.pid"
  kill_pidfile "$DIR/coredns.pid"
  if [[ -S "$SOCK" ]]; then
    local t c
    for t in $(ctr -a "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do ctr -a "$SOCK" -n k8s.io tasks kill -s KILL "$t" 2>/dev/null || true; done
    sleep 1
    for t in $(ctr -a "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do ctr -a "$SOCK" -n k8s.io tasks rm -f "$t" 2>/dev/null || true; done
    for c in $(ctr -a "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do ctr -a "$SOCK" -n k8s.io containers rm "$c" 2>/dev/null || true; done
  fi
  kill_pidfile "$DIR/containerd.pid"
  # Shims and container processes outlive containerd: ours name our socket, and
  # what is left in the kubelet's cgroups is ours too.
  local p i pids
  for p in $(pgrep -f containerd-shim-runc-v2 || true); do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "$SOCK" && kill -KILL "$p" 2>/dev/null || true
  done
  for ((i = 0; i < 3; i++)); do
    pids="$(cat $(find /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/pids/k8s.io -name cgroup.procs 2>/dev/null) /dev/null 2>/dev/null | sort -u)"
    [[ -z "$pids" ]] && break
    kill -KILL $pids 2>/dev/null || true
    sleep 1
  done
  "$ROOT/scripts/kube-env.sh" stop "$DIR/kube" >/dev/null 2>&1 || true
  for n in /run/netns/cni-*; do
    [[ -e "$n" ]] && { ip netns delete "$(basename "$n")" 2>/dev/null || { umount "$n" 2>/dev/null; rm -f "$n"; }; }
  done
  grep -oE " ($DIR|/run/containerd)/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ip link delete "$BRIDGE" 2>/dev/null || true
  local ipt t r ch
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in mangle nat filter; do
      "$ipt" -t "$t" -S 2>/dev/null | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-' | sed 's/^-A //' \
        | while read -r r; do eval "$ipt" -t "$t" -D "$r" 2>/dev/null || true; done
      for ch in $("$ipt" -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/ { print $2 }'); do "$ipt" -t "$t" -F "$ch" 2>/dev/null || true; done
      for ch in $("$ipt" -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/ { print $2 }'); do "$ipt" -t "$t" -X "$ch" 2>/dev/null || true; done
    done
  done
  for h in /sys/fs/cgroup/*/; do
    for top in kubepods k8s.io; do [[ -d "$h$top" ]] && find "$h$top" -depth -type d -exec rmdir {} \; 2>/dev/null || true; done
  done
  if [[ -f "$DIR/sysctl-saved" ]]; then
    while IFS== read -r k v; do sysctl -qw "$k=$v" 2>/dev/null || true; done <"$DIR/sysctl-saved"
    rm -f "$DIR/sysctl-saved"
  fi
  if [[ -f "$DIR/host-dirs-created" ]]; then
    while read -r d; do rm -rf "$d"; done <"$DIR/host-dirs-created"
    rm -f "$DIR/host-dirs-created"
  fi
  log "stopped; host settings restored"
}

case "$cmd" in
  start) start ;;
  import) import_images "$@" ;;
  stop) stop ;;
  *) usage ;;
esac

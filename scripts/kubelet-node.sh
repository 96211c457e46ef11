#!/usr/bin/env bash
# A real single-node Kubernetes on this kind of machine: a kube-env control plane
# (etcd, kube-apiserver, kube-controller-manager), kube-scheduler, and a real
# kubelet running pods through Debian's containerd 1.6 and runc 1.1, with the
# bridge CNI plugin. kubelet and kube-scheduler are built from the repo's
# k8s.io/kubernetes pin (scripts/k8s-bins.sh kubelet). No registry is reached:
# images are imported from docker-archive tars (scripts/docker-archive.py).
#
# The kubelet test (tests/it/operator/kubelet.rs) installs the chart on it; the
# README's whole path still runs on the stand-in node (tests/it/operator/node/),
# which also stands in for kube-proxy and DNS. docs/kubernetes.md ("A real
# kubelet") says what was tried and what is left.
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
# mapping: traffic stays on this machine); the kubelet's KUBE-* iptables chains;
# cgroups /kubepods and /k8s.io; /var/lib/kubelet, /var/log/pods,
# /var/log/containers, /var/lib/cni, /run/netns/cni-*.
#
# Settings this machine needs (each found by trying; see docs/kubernetes.md):
# - `failCgroupV1: false`: kubelet 1.35 refuses a cgroup v1 host otherwise.
# - containerd `restrict_oom_score_adj = true`: root here lacks CAP_SYS_RESOURCE,
#   so runc cannot lower a sandbox's oom_score_adj to -998 ("can't get final
#   child's PID from pipe: EOF").
# - The node's `not-ready` taint is removed by hand once Ready (kube-env runs no
#   node-lifecycle controller).
# Pods get no ServiceAccount token (kube-env turns that admission plugin off):
# give them `automountServiceAccountToken: false`. No kube-proxy, no cluster DNS.
# Do not use `kubectl logs`/`exec`/`port-forward` against this node: the API
# server would look the node's name up in the machine's DNS resolver (the
# kubelet serves on 127.0.0.1, so it would fail anyway); read the container
# logs under /var/log/pods instead.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE=hookit-kubelet
BRIDGE=hk-cni0
POD_CIDR=10.244.0.0/24
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward)
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

# The sandbox ("pause") image: a static C program that reaps children and exits on TERM.
pause_image() {
  local out="$DIR/images/pause.tar"
  [[ -s "$out" ]] && return
  mkdir -p "$DIR/images/pause-root"
  gcc -Os -static -o "$DIR/images/pause-root/pause" "$ROOT/tests/k8s-bins/node/pause.c"
  strip "$DIR/images/pause-root/pause"
  python3 "$ROOT/scripts/docker-archive.py" "$out" localhost/pause:3.10 "$DIR/images/pause-root" '["/pause"]' >/dev/null
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
  cat >"$DIR/cni/net.d/10-hookit.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "hookit-pods",
  "plugins": [
    { "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$POD_CIDR" }]], "dataDir": "$DIR/cni/ipam" } }
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
EOF
}

import_images() {
  local t
  for t in "$@"; do
    ctr -a "$SOCK" -n k8s.io images import "$t" >/dev/null || die "could not import $t"
  done
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
  KUBE_ENV_CONTROLLERS=1 "$ROOT/scripts/kube-env.sh" start "$DIR/kube" >/dev/null
  # shellcheck disable=SC1091
  . "$DIR/kube/env"
  pause_image
  write_configs
  if [[ ! -f "$DIR/sysctl-saved" ]]; then
    for k in "${SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k")"; done >"$DIR/sysctl-saved"
    for d in "${HOST_DIRS[@]}"; do [[ -e "$d" ]] || echo "$d"; done >"$DIR/host-dirs-created"
  fi
  # The pods' bridge, made now rather than at the first pod, so that services
  # for the pods (a database, a receiver) can listen on its address at once.
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "${POD_CIDR%.0/24}.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  log "starting containerd"
  setsid containerd --config "$DIR/containerd/config.toml" </dev/null >"$DIR/containerd.log" 2>&1 &
  echo $! >"$DIR/containerd.pid"
  wait_for containerd 30 ctr -a "$SOCK" version
  import_images "$DIR/images/pause.tar"
  log "starting kube-scheduler"
  setsid "$bins/kube-scheduler" --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" \
    --authorization-kubeconfig "$KUBECONFIG" --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
    </dev/null >"$DIR/kube-scheduler.log" 2>&1 &
  echo $! >"$DIR/kube-scheduler.pid"
  log "starting the kubelet"
  setsid "$bins/kubelet" --config "$DIR/kubelet/config.yaml" --kubeconfig "$KUBECONFIG" \
    --root-dir "$DIR/kubelet/root" --cert-dir "$DIR/kubelet/pki" --hostname-override "$NODE" \
    </dev/null >"$DIR/kubelet.log" 2>&1 &
  echo $! >"$DIR/kubelet.pid"
  wait_for "node $NODE" 120 node_ready
  kubectl taint node "$NODE" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
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

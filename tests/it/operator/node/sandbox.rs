//! One container as a process, confined the way its pod spec asks: in the pod's
//! network namespace, in a private mount namespace whose every mount is
//! read-only (`readOnlyRootFilesystem`) except the pod's `emptyDir` volumes, as
//! `runAsUser`/`runAsGroup` with no supplementary groups, no capabilities left
//! in any set (`capabilities.drop: [ALL]`) and `no_new_privs`
//! (`allowPrivilegeEscalation: false`). The "image" is the host's root
//! filesystem plus the binary under test at the image's entrypoint path.
//!
//! This is not a container runtime: there is no pid namespace, no cgroup limit
//! and no seccomp profile. It catches what the chart can get wrong about the
//! process it starts: arguments, environment, users, writable paths and ports.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The container's PATH, as the runtime image sets it.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the image keeps the binary (the Dockerfile's ENTRYPOINT).
pub const IMAGE_BINARY: &str = "/usr/local/bin/hookit";

/// Prepares the mount namespace as root, proves the root is read-only when it
/// must be, then becomes the container's user and execs the entrypoint.
/// Positional: binary hosts resolv.conf sa_dir read_only <emptyDir paths...> -- <setpriv argv...>
const SETUP: &str = r#"
set -eu
bin="$1"; hosts="$2"; resolv="$3"; sa="$4"; ro="$5"; shift 5
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /usr/local/bin
cp "$bin" /usr/local/bin/hookit
chmod 0755 /usr/local/bin/hookit
mount --bind "$hosts" /etc/hosts
mount --bind "$resolv" /etc/resolv.conf
if [ -n "$sa" ]; then
  mkdir -p /run/secrets/kubernetes.io/serviceaccount
  cp "$sa"/token "$sa"/ca.crt "$sa"/namespace /run/secrets/kubernetes.io/serviceaccount/
  chmod 0644 /run/secrets/kubernetes.io/serviceaccount/*
fi
if [ "$ro" = 1 ]; then
  awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
    case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
    mount -o remount,bind,ro "$m" 2>/dev/null || true
  done
  for probe in /.hookit-rw-probe /usr/local/bin/.hookit-rw-probe /run/.hookit-rw-probe; do
    if touch "$probe" 2>/dev/null; then
      rm -f "$probe"
      echo "node: $probe is writable although readOnlyRootFilesystem is set" >&2
      exit 97
    fi
  done
fi
while [ "$1" != -- ]; do
  mount -t tmpfs -o mode=1777,size=64m tmpfs "$1"
  shift
done
shift
exec "$@"
"#;

/// What a container is started with.
pub struct Launch {
    /// Entrypoint + arguments, after `$(VAR)` expansion.
    pub argv: Vec<String>,
    /// The container's environment, complete.
    pub env: Vec<(String, String)>,
    /// `runAsUser` / `runAsGroup`.
    pub uid: Option<i64>,
    pub gid: Option<i64>,
    pub read_only_root: bool,
    pub drop_all_capabilities: bool,
    pub no_new_privileges: bool,
    /// Mount paths of the pod's `emptyDir` volumes in this container.
    pub empty_dirs: Vec<String>,
    /// A directory with `token`, `ca.crt` and `namespace`, mounted as the
    /// ServiceAccount token.
    pub service_account: Option<PathBuf>,
    /// The pod's hosts file and resolv.conf (cluster DNS on the node).
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// The binary placed at [`IMAGE_BINARY`].
    pub image_binary: PathBuf,
    /// stdout and stderr go here.
    pub log: PathBuf,
}

/// Starts the container in the network namespace `netns`.
pub fn start(netns: &Path, l: &Launch) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.log)?;
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.display()))
        .args([
            "--", "unshare", "--mount", "--", "/bin/sh", "-c", SETUP, "setup",
        ])
        .arg(&l.image_binary)
        .arg(&l.hosts)
        .arg(&l.resolv_conf)
        .arg(l.service_account.as_deref().unwrap_or(Path::new("")))
        .arg(if l.read_only_root { "1" } else { "0" })
        .args(&l.empty_dirs)
        .arg("--")
        .arg("setpriv");
    if let Some(uid) = l.uid {
        cmd.arg(format!("--reuid={uid}"));
    }
    if let Some(gid) = l.gid.or(l.uid) {
        cmd.arg(format!("--regid={gid}")).arg("--clear-groups");
    }
    if l.drop_all_capabilities {
        cmd.args([
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
        ]);
    }
    if l.no_new_privileges {
        cmd.arg("--no-new-privs");
    }
    cmd.arg("--")
        .args(&l.argv)
        .env_clear()
        .env("PATH", IMAGE_PATH)
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    cmd.spawn()
}

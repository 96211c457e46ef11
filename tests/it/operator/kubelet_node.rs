//! The real single-node cluster of `scripts/kubelet-node.sh`, for the tests
//! that run pods: a kube-env control plane, kube-scheduler, a kubelet with
//! containerd and runc, kube-proxy and CoreDNS, all on this machine; and what
//! those tests share: the binary under test as an image, and what runc did to
//! its processes.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::env::{bins_dir, repo};

/// The node, stopped (and the host's settings restored) on drop, so a failing
/// test leaves nothing running. Its directory (hundreds of megabytes: images,
/// containerd's snapshots, the database volume) is removed too, unless the
/// test failed: then its logs are what tells why.
pub struct KubeletNode {
    /// Where the script keeps the node (logs, images, volumes).
    pub dir: PathBuf,
    /// Admin kubeconfig of its control plane.
    pub kubeconfig: PathBuf,
}

impl KubeletNode {
    /// Starts a node in a fresh `dir`; returns once the Node is Ready and
    /// kube-proxy and CoreDNS serve.
    pub fn start(dir: PathBuf) -> Self {
        let _ = std::fs::remove_dir_all(&dir);
        let out = script(&["start", &dir.to_string_lossy()]);
        assert!(
            out.status.success(),
            "scripts/kubelet-node.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        KubeletNode {
            kubeconfig: dir.join("kube/kubeconfig"),
            dir,
        }
    }

    /// Imports a docker-archive image into the node's containerd.
    pub fn import(&self, tar: &Path) {
        let out = script(&[
            "import",
            &self.dir.to_string_lossy(),
            &tar.to_string_lossy(),
        ]);
        assert!(
            out.status.success(),
            "importing {}: {}",
            tar.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The lines that container `container` of the pods named `<pod_prefix>*`
    /// in `namespace` wrote to `stream` ("stdout", "stderr", or None for both),
    /// from the kubelet's log files (what `kubectl logs` would show; see the
    /// script on why not kubectl).
    pub fn container_log(
        &self,
        namespace: &str,
        pod_prefix: &str,
        container: &str,
        stream: Option<&str>,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        let Ok(pods) = std::fs::read_dir("/var/log/pods") else {
            return lines;
        };
        for pod in pods.flatten() {
            let name = pod.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&format!("{namespace}_{pod_prefix}")) {
                continue;
            }
            let Ok(logs) = std::fs::read_dir(pod.path().join(container)) else {
                continue;
            };
            for log in logs.flatten() {
                let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                // CRI log format: `<time> <stream> <P|F> <text>`.
                lines.extend(text.lines().filter_map(|l| {
                    let mut parts = l.splitn(4, ' ');
                    let (_, from, _, text) =
                        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                    stream.is_none_or(|s| s == from).then(|| text.to_string())
                }));
            }
        }
        lines
    }
}

impl Drop for KubeletNode {
    fn drop(&mut self) {
        let out = script(&["stop", &self.dir.to_string_lossy()]);
        if !out.status.success() {
            eprintln!(
                "kubelet-node.sh stop: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn script(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("scripts/kubelet-node.sh"))
        .args(args)
        .env("K8S_BINS_DIR", bins_dir())
        .output()
        .expect("running scripts/kubelet-node.sh")
}

/// Why the node cannot run here, if it cannot.
pub fn prerequisites() -> Result<(), String> {
    super::node_prerequisites(&[
        "containerd",
        "runc",
        "ctr",
        "strip",
        "ldd",
        "gcc",
        "python3",
        "ip",
        "iptables",
        "curl",
    ])?;
    for bin in [
        "kubelet",
        "kube-scheduler",
        "kube-proxy",
        "coredns",
        "kube-controller-manager",
        "helm",
    ] {
        if !bins_dir().join(bin).is_file() {
            return Err(format!(
                "{bin} missing from {} (scripts/k8s-bins.sh)",
                bins_dir().display()
            ));
        }
    }
    Ok(())
}

/// The binary under test as image `reference`, a docker-archive tar in `dir`:
/// the binary without its debug sections, the shared libraries it links, and a
/// passwd entry for uid 65532.
pub fn build_image(dir: &Path, reference: &str) -> PathBuf {
    let root = dir.join("image-root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let bin = env!("CARGO_BIN_EXE_hookit");
    let ok = Command::new("strip")
        .args(["--strip-debug", "-o"])
        .arg(root.join("usr/local/bin/hookit"))
        .arg(bin)
        .status()
        .unwrap()
        .success();
    assert!(ok, "strip {bin}");
    let ldd = Command::new("ldd").arg(bin).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let dest = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copying {lib}: {e}"));
    }
    std::fs::write(
        root.join("etc/passwd"),
        "nonroot:x:65532:65532::/nonexistent:/sbin/nologin\n",
    )
    .unwrap();
    let tar = dir.join("hookit.tar");
    let ok = Command::new("python3")
        .arg(repo().join("scripts/docker-archive.py"))
        .arg(&tar)
        .arg(reference)
        .arg(&root)
        .arg(r#"["/usr/local/bin/hookit"]"#)
        .status()
        .unwrap()
        .success();
    assert!(ok, "scripts/docker-archive.py");
    tar
}

/// What runc set up for one process of the HookIt image.
#[derive(Debug)]
pub struct HookitProcess {
    /// Its command line.
    pub cmdline: String,
    /// `Uid:` of /proc/<pid>/status (real, effective, saved, fs).
    pub uid: String,
    /// `Gid:`.
    pub gid: String,
    /// `CapEff:`.
    pub cap_eff: String,
    /// `CapBnd:`: what it could ever regain.
    pub cap_bnd: String,
    /// `Seccomp:`: 2 is a filter (the pod's `RuntimeDefault` profile).
    pub seccomp: String,
    /// `NoNewPrivs:`.
    pub no_new_privs: String,
    /// Mount options of its root.
    pub root_mount: String,
    /// Its memory cgroup.
    pub memory_cgroup: String,
}

/// Every process of the HookIt image, found by its binary's path inside the
/// kubelet's cgroups.
pub fn hookit_processes() -> Vec<HookitProcess> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.starts_with("/usr/local/bin/hookit ") {
            continue;
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let Some(memory) = cgroup
            .lines()
            .find(|l| l.contains(":memory:") || l.starts_with("0::"))
            .map(|l| l.rsplit(':').next().unwrap_or_default().to_string())
        else {
            continue;
        };
        if !memory.contains("kubepods") {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |key: &str| super::status_field(&status, key).join(" ");
        let root_mount = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .and_then(|l| l.split_whitespace().nth(5).map(str::to_string))
            .unwrap_or_default();
        out.push(HookitProcess {
            cmdline: cmdline.trim().to_string(),
            uid: field("Uid:"),
            gid: field("Gid:"),
            cap_eff: field("CapEff:"),
            cap_bnd: field("CapBnd:"),
            seccomp: field("Seccomp:"),
            no_new_privs: field("NoNewPrivs:"),
            root_mount,
            memory_cgroup: memory,
        });
    }
    out
}

/// Asserts that runc ran `p` as the chart's pod spec says: uid and gid 65532,
/// no capabilities (nor any to regain), no privilege escalation, the
/// `RuntimeDefault` seccomp filter, a read-only root, the pod's cgroup.
pub fn assert_confined(p: &HookitProcess) {
    let cmd = &p.cmdline;
    assert_eq!(p.uid, "65532 65532 65532 65532", "{cmd}: Uid");
    assert_eq!(p.gid, "65532 65532 65532 65532", "{cmd}: Gid");
    assert_eq!(p.cap_eff, "0000000000000000", "{cmd}: CapEff");
    assert_eq!(p.cap_bnd, "0000000000000000", "{cmd}: CapBnd");
    assert_eq!(p.seccomp, "2", "{cmd}: Seccomp");
    assert_eq!(p.no_new_privs, "1", "{cmd}: NoNewPrivs");
    assert!(
        p.root_mount.split(',').any(|o| o == "ro"),
        "{cmd}: root mounted {}",
        p.root_mount
    );
    assert!(
        p.memory_cgroup.contains("/kubepods/"),
        "{cmd}: cgroup {}",
        p.memory_cgroup
    );
}

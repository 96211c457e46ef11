//! The node's network, built only from namespaces this test makes, so the host's
//! own network is never touched:
//! - one network namespace for the node: a bridge (`10.244.0.1/24`), the Service
//!   ClusterIPs (as /32 addresses on it) and the addresses of stand-in pods;
//! - one per sandboxed pod: `eth0`, a veth whose other end is on that bridge.
//!
//! The test's own sockets are born in the node's namespace by a short-lived
//! thread that enters it (`setns` moves only the calling thread), and are then
//! driven by the test's runtime like any other socket. Connections to the
//! control plane and to PostgreSQL, which listen on the host's loopback, are
//! made from the host namespace, so proxies bridge the two.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The node's gateway address on its bridge.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);

/// The node network namespace and the pod namespaces made from it.
pub struct NodeNet {
    /// Name under /run/netns.
    name: String,
    next_host: AtomicU32,
    pods: Mutex<Vec<String>>,
    addresses: Mutex<Vec<Ipv4Addr>>,
}

/// Runs `ip` with `args`; an error names the command.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces left by runs that died without cleaning up (their pid is gone).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix("hkn")
            .or_else(|| name.strip_prefix("hkp"))
        else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

impl NodeNet {
    /// Creates the node namespace with its bridge.
    pub fn create() -> Result<Self, String> {
        remove_stale();
        let name = format!("hkn{}", std::process::id());
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let net = Self {
            name,
            next_host: AtomicU32::new(10),
            pods: Mutex::default(),
            addresses: Mutex::default(),
        };
        let n = net.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{GATEWAY}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", n, "link", "set", "br0", "up"])?;
        Ok(net)
    }

    /// The namespace file, for `nsenter --net=` and `setns`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// A fresh pod address on the bridge's subnet.
    pub fn allocate(&self) -> Result<Ipv4Addr, String> {
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        if host > 254 {
            return Err("the node's pod subnet (10.244.0.0/24) is exhausted".into());
        }
        Ok(Ipv4Addr::new(10, 244, 0, host as u8))
    }

    /// Makes `addr` local to the node namespace (a Service ClusterIP, or a
    /// stand-in pod's address), once.
    pub fn add_address(&self, addr: Ipv4Addr) -> Result<(), String> {
        let mut have = self.addresses.lock().unwrap();
        if have.contains(&addr) {
            return Ok(());
        }
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "br0",
        ])?;
        have.push(addr);
        Ok(())
    }

    /// A pod's own namespace, `eth0` = `addr`/24 on the bridge, default route
    /// through the node. Returns the namespace file.
    pub fn pod_namespace(&self, addr: Ipv4Addr) -> Result<PathBuf, String> {
        let host = addr.octets()[3];
        let pod = format!("hkp{}-{host}", std::process::id());
        let veth = format!("veth{host}");
        let n = self.name.as_str();
        let _ = ip(&["netns", "del", &pod]);
        ip(&["netns", "add", &pod])?;
        self.pods.lock().unwrap().push(pod.clone());
        ip(&[
            "-n", n, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod,
        ])?;
        ip(&["-n", n, "link", "set", &veth, "master", "br0"])?;
        ip(&["-n", n, "link", "set", &veth, "up"])?;
        ip(&["-n", &pod, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &pod,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &pod, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &pod,
            "route",
            "add",
            "default",
            "via",
            &GATEWAY.to_string(),
        ])?;
        Ok(Path::new("/run/netns").join(pod))
    }

    /// Removes a pod's namespace (its veth goes with it).
    pub fn remove_pod_namespace(&self, path: &Path) {
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            let _ = ip(&["netns", "del", name]);
            self.pods.lock().unwrap().retain(|p| p != name);
        }
    }

    /// A listener on `addr`, inside the node namespace.
    pub async fn listen(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let std = in_netns(self.path(), move || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .await?;
        tokio::net::TcpListener::from_std(std)
    }

    /// A UDP socket on `addr`, inside the node namespace.
    pub async fn udp(&self, addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
        let std = in_netns(self.path(), move || {
            let s = std::net::UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .await?;
        tokio::net::UdpSocket::from_std(std)
    }

    /// A connection to `addr` (a pod or a ClusterIP), from the node namespace.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let std = in_netns(self.path(), move || {
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .await?;
        tokio::net::TcpStream::from_std(std)
    }
}

impl Drop for NodeNet {
    fn drop(&mut self) {
        for pod in self.pods.lock().unwrap().drain(..) {
            let _ = ip(&["netns", "del", &pod]);
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Runs `f` on a fresh thread that first enters the network namespace at `path`
/// (the thread ends with `f`, so no other work ever runs in that namespace).
async fn in_netns<T, F>(path: PathBuf, f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path)?;
            // SAFETY: setns on a valid descriptor; it changes only this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| std::io::Error::other("network namespace thread panicked"))?
    })
    .await
    .map_err(std::io::Error::other)?
}

//! The kubelet's probes, made from the node's network namespace on the pod's
//! address and the ports the container declares.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::net::NodeNet;
use super::Shared;

pub(super) fn delay(p: &Probe) -> Duration {
    Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64)
}

/// One probe of a sandboxed container: `httpGet` or `tcpSocket` on the pod IP.
pub(super) async fn probe_once(
    shared: &Shared,
    c: &Container,
    p: &Probe,
    ip: Ipv4Addr,
) -> Result<bool, String> {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let port_of = |port: &IntOrString| -> Result<u16, String> {
        match port {
            IntOrString::Int(n) => Ok(*n as u16),
            IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name))
                .map(|cp| cp.container_port as u16)
                .ok_or_else(|| {
                    format!(
                        "container {}: probe names port {name:?}, which it does not declare",
                        c.name
                    )
                }),
        }
    };
    if let Some(h) = &p.http_get {
        let port = port_of(&h.port)?;
        let path = h.path.clone().unwrap_or("/".into());
        return Ok(http_get(&shared.net, SocketAddr::from((ip, port)), &path, timeout).await);
    }
    if let Some(t) = &p.tcp_socket {
        let port = port_of(&t.port)?;
        let conn = shared.net.connect(SocketAddr::from((ip, port)));
        return Ok(matches!(
            tokio::time::timeout(timeout, conn).await,
            Ok(Ok(_))
        ));
    }
    Err(format!(
        "container {}: only httpGet and tcpSocket probes run on this node",
        c.name
    ))
}

/// An `httpGet` probe: a 2xx or 3xx answer within `timeout`, as the kubelet
/// counts it. Made from the node namespace, like the kubelet's.
async fn http_get(net: &NodeNet, addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut s = net.connect(addr).await.ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.35\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        let status: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some((200..400).contains(&status))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

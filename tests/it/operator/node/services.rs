//! What kube-proxy and cluster DNS do for the node's pods:
//! - every ClusterIP Service port listens on its ClusterIP in the node
//!   namespace and forwards each connection to a ready endpoint that the
//!   EndpointSlice controller (the real one, in kube-controller-manager) lists
//!   for it; `default/kubernetes` forwards to the API server;
//! - a DNS server on the node's gateway answers `<svc>.<ns>.svc.cluster.local`
//!   with the Service's ClusterIP, asking the API server at query time (as
//!   CoreDNS answers from its watch), so a Service created a moment before its
//!   first lookup resolves. Pods search `<ns>.svc.cluster.local`,
//!   `svc.cluster.local` and `cluster.local`, as the kubelet configures them.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::net::NodeNet;

/// Service proxies and names.
pub struct Services {
    net: Arc<NodeNet>,
    client: Client,
    apiserver: SocketAddr,
    listening: Mutex<HashSet<(Ipv4Addr, u16)>>,
    /// (namespace, name) → ClusterIP.
    names: Mutex<BTreeMap<(String, String), Ipv4Addr>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Services {
    pub fn new(net: Arc<NodeNet>, client: Client, apiserver: SocketAddr) -> Self {
        Self {
            net,
            client,
            apiserver,
            listening: Mutex::default(),
            names: Mutex::default(),
            tasks: Mutex::default(),
        }
    }

    /// ClusterIP of a Service, once the node has seen it.
    pub fn cluster_ip(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        let names = self.names.lock().unwrap();
        names.get(&(namespace.into(), name.into())).copied()
    }

    /// Brings the proxies and names up to date with the API server's Services.
    pub async fn sync(self: &Arc<Self>) -> Result<(), String> {
        let all: Api<Service> = Api::all(self.client.clone());
        let list = all
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing Services: {e}"))?;
        for svc in list {
            let ns = svc.namespace().unwrap_or_default();
            let name = svc.name_any();
            let Some(spec) = svc.spec.as_ref() else {
                continue;
            };
            let Some(ip) = spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            else {
                continue; // headless
            };
            if self
                .names
                .lock()
                .unwrap()
                .insert((ns.clone(), name.clone()), ip)
                != Some(ip)
            {
                self.net.add_address(ip)?;
            }
            for port in spec.ports.clone().unwrap_or_default() {
                if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                    continue;
                }
                let number = port.port as u16;
                if !self.listening.lock().unwrap().insert((ip, number)) {
                    continue;
                }
                let listener = self
                    .net
                    .listen(SocketAddr::from((ip, number)))
                    .await
                    .map_err(|e| format!("listening on {ip}:{number} for {ns}/{name}: {e}"))?;
                let me = self.clone();
                let (ns, name) = (ns.clone(), name.clone());
                let port_name = port.name.clone().unwrap_or_default();
                let task = tokio::spawn(async move {
                    while let Ok((conn, _)) = listener.accept().await {
                        let me = me.clone();
                        let (ns, name, port_name) = (ns.clone(), name.clone(), port_name.clone());
                        tokio::spawn(async move {
                            let _ = me.forward(conn, &ns, &name, &port_name, number).await;
                        });
                    }
                });
                self.tasks.lock().unwrap().push(task);
            }
        }
        Ok(())
    }

    /// One proxied connection: to the API server for `default/kubernetes`, else
    /// to the first ready endpoint of the Service's EndpointSlices.
    async fn forward(
        &self,
        mut conn: tokio::net::TcpStream,
        ns: &str,
        name: &str,
        port_name: &str,
        port: u16,
    ) -> std::io::Result<()> {
        let mut upstream = if (ns, name) == ("default", "kubernetes") {
            tokio::net::TcpStream::connect(self.apiserver).await?
        } else {
            let target = self
                .endpoint(ns, name, port_name, port)
                .await
                .ok_or_else(|| std::io::Error::other("no ready endpoint"))?;
            self.net.connect(target).await?
        };
        tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
        Ok(())
    }

    async fn endpoint(
        &self,
        ns: &str,
        name: &str,
        port_name: &str,
        port: u16,
    ) -> Option<SocketAddr> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
        for slice in api.list(&lp).await.ok()? {
            let target = slice.ports.iter().flatten().find_map(|p| {
                let matches = p.name.as_deref().unwrap_or_default() == port_name
                    || (port_name.is_empty() && p.port == Some(port as i32));
                matches.then_some(p.port).flatten()
            })?;
            for ep in &slice.endpoints {
                let ready = ep
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(false);
                if let (true, Some(addr)) = (ready, ep.addresses.first()) {
                    if let Ok(ip) = addr.parse::<Ipv4Addr>() {
                        return Some(SocketAddr::from((ip, target as u16)));
                    }
                }
            }
        }
        None
    }

    /// Serves DNS on `addr` (UDP) in the node namespace.
    pub async fn serve_dns(self: &Arc<Self>, addr: SocketAddr) -> Result<(), String> {
        let socket = self
            .net
            .udp(addr)
            .await
            .map_err(|e| format!("DNS on {addr}: {e}"))?;
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if let Some(reply) = me.answer(&buf[..n]).await {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        self.tasks.lock().unwrap().push(task);
        Ok(())
    }

    /// One DNS reply: an A record for a Service name, an empty answer for its
    /// other record types, NXDOMAIN for everything else.
    async fn answer(self: &Arc<Self>, query: &[u8]) -> Option<Vec<u8>> {
        let q = dns::Question::parse(query)?;
        let labels: Vec<&str> = q.name.split('.').collect();
        let ip = match labels.as_slice() {
            [svc, ns, "svc", "cluster", "local"] => self.lookup(ns, svc).await,
            _ => None,
        };
        Some(match ip {
            Some(ip) if q.qtype == dns::A => dns::reply(query, &q, Some(ip), 0),
            Some(_) => dns::reply(query, &q, None, 0),
            None => dns::reply(query, &q, None, 3),
        })
    }

    /// A Service's ClusterIP, fresh from the API server; a Service the node
    /// has not proxied yet is proxied before the answer goes out.
    async fn lookup(self: &Arc<Self>, ns: &str, name: &str) -> Option<Ipv4Addr> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let svc = api.get_opt(name).await.ok()??;
        let ip: Ipv4Addr = svc.spec?.cluster_ip?.parse().ok()?;
        if self.cluster_ip(ns, name) != Some(ip) {
            let _ = self.sync().await;
        }
        Some(ip)
    }
}

/// Just enough of the DNS wire format (RFC 1035) for one question and one answer.
mod dns {
    use std::net::Ipv4Addr;

    pub const A: u16 = 1;

    pub struct Question {
        /// Lower-case, without the trailing dot.
        pub name: String,
        pub qtype: u16,
        /// Where the question section ends in the query.
        end: usize,
    }

    impl Question {
        pub fn parse(q: &[u8]) -> Option<Question> {
            if q.len() < 12 || u16::from_be_bytes([q[4], q[5]]) != 1 {
                return None;
            }
            let mut i = 12;
            let mut labels = Vec::new();
            loop {
                let len = *q.get(i)? as usize;
                i += 1;
                if len == 0 {
                    break;
                }
                if len > 63 {
                    return None; // compression is not used in questions
                }
                labels.push(
                    std::str::from_utf8(q.get(i..i + len)?)
                        .ok()?
                        .to_ascii_lowercase(),
                );
                i += len;
            }
            let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
            Some(Question {
                name: labels.join("."),
                qtype,
                end: i + 4,
            })
        }
    }

    /// The reply to `query`: its id and question, `ip` as the one answer.
    pub fn reply(query: &[u8], q: &Question, ip: Option<Ipv4Addr>, rcode: u8) -> Vec<u8> {
        let mut r = Vec::with_capacity(q.end + 16);
        r.extend_from_slice(&query[..2]);
        let rd = query[2] & 0x01;
        r.push(0x84 | rd); // QR, AA, RD as asked
        r.push(0x80 | rcode); // RA
        r.extend_from_slice(&[0, 1, 0, u8::from(ip.is_some()), 0, 0, 0, 0]);
        r.extend_from_slice(&query[12..q.end]);
        if let Some(ip) = ip {
            r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
            r.extend_from_slice(&ip.octets());
        }
        r
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

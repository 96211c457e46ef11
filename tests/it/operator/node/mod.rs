//! A single-node stand-in for the kubelet, kube-proxy and cluster DNS, so the
//! chart can be installed and run the way the README says without a container
//! runtime (no registry is reachable and the machine's cgroups cannot host a
//! kubelet; docs/kubernetes.md says what was tried).
//!
//! It is driven by the real control plane: kube-apiserver plus the real
//! kube-controller-manager (Deployment, ReplicaSet, StatefulSet, Job,
//! EndpointSlice and garbage-collector controllers), which create the Pods.
//! The node binds every unscheduled Pod to itself, runs it, reports its status
//! (IP, phase, readiness, restarts) like a kubelet, and finishes its deletion.
//! - HookIt's containers run as sandboxed processes (see `sandbox`): the
//!   container's command, args and environment (with Secret, ConfigMap and
//!   field references resolved, and service-link variables when the pod
//!   does not turn them off), its user, read-only root and emptyDirs, its
//!   ServiceAccount token when the pod mounts one, in the pod's own network
//!   namespace. Their `httpGet` probes are made on the ports they name.
//! - Images that cannot be pulled here have stand-ins (see `standins`).
//!
//! What it does not do: resource limits, pid namespaces, seccomp, exec probes
//! of HookIt's containers, volumes other than emptyDir, init containers. It is
//! not a kubelet, and the docs say so.

mod env;
pub mod net;
mod pod;
mod probe;
mod sandbox;
mod services;
mod standins;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node as KubeNode, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::Receiver;
use net::NodeNet;
use pod::PodRun;
use services::Services;

/// The Node object's name.
pub const NODE_NAME: &str = "hookit-node";

/// How often the node looks at Pods and Services (a kubelet is told by a watch;
/// polling keeps this small, and a pod waits at most this long for its turn).
const TICK: Duration = Duration::from_millis(300);

/// Readiness is probed this often, more often than the manifests' periodSeconds,
/// so the test does not wait for nothing; liveness keeps the manifests' period.
const READINESS_PERIOD: Duration = Duration::from_secs(1);

/// What the node needs from the test.
pub struct Options {
    /// Admin kubeconfig (ServiceAccount tokens are requested with kubectl).
    pub kubeconfig: PathBuf,
    /// The API server's CA, mounted with every ServiceAccount token.
    pub ca: PathBuf,
    /// The API server on the host's loopback (`default/kubernetes` forwards there).
    pub apiserver: SocketAddr,
    /// The HookIt binary: the content of the `hookit` image.
    pub binary: PathBuf,
    /// Pod directories (hosts and resolv.conf, tokens, container logs).
    pub dir: PathBuf,
}

/// A container's identity and process, for the test's checks.
#[derive(Clone, Debug)]
pub struct ContainerProcess {
    /// `namespace/pod/container`
    pub name: String,
    pub pid: u32,
}

struct Shared {
    client: Client,
    net: Arc<NodeNet>,
    services: Arc<Services>,
    opts: Options,
    echo: Mutex<Vec<(String, Arc<Receiver>)>>,
    processes: Mutex<Vec<ContainerProcess>>,
    problems: Mutex<Vec<String>>,
}

impl Shared {
    fn problem(&self, p: String) {
        let mut ps = self.problems.lock().unwrap();
        if !ps.contains(&p) {
            ps.push(p);
        }
    }
}

/// The running node.
pub struct Node {
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Registers the Node object and starts running pods.
    pub async fn start(client: Client, opts: Options) -> Result<Node, String> {
        std::fs::create_dir_all(&opts.dir).map_err(|e| e.to_string())?;
        let net = Arc::new(NodeNet::create()?);
        register(&client).await?;
        let services = Arc::new(Services::new(net.clone(), client.clone(), opts.apiserver));
        services
            .serve_dns(SocketAddr::from((net::GATEWAY, 53)))
            .await?;
        let shared = Arc::new(Shared {
            client,
            net,
            services,
            opts,
            echo: Mutex::default(),
            processes: Mutex::default(),
            problems: Mutex::default(),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(shared.clone(), stop.clone()));
        Ok(Node {
            shared,
            stop,
            task: Some(task),
        })
    }

    /// The node's network namespace (to reach ClusterIPs from the test).
    pub fn netns(&self) -> PathBuf {
        self.shared.net.path()
    }

    /// A Service's ClusterIP as the node proxies it.
    pub fn cluster_ip(&self, ns: &str, name: &str) -> Option<Ipv4Addr> {
        self.shared.services.cluster_ip(ns, name)
    }

    /// The echo stand-in of a pod in `ns`.
    pub fn echo_receiver(&self, ns: &str) -> Option<Arc<Receiver>> {
        let echo = self.shared.echo.lock().unwrap();
        echo.iter()
            .find(|(pod, _)| pod.starts_with(&format!("{ns}/")))
            .map(|(_, r)| r.clone())
    }

    /// Every sandboxed container process that is running.
    pub fn processes(&self) -> Vec<ContainerProcess> {
        self.shared.processes.lock().unwrap().clone()
    }

    /// What went wrong so far (images that cannot run, failed setups).
    pub fn problems(&self) -> Vec<String> {
        self.shared.problems.lock().unwrap().clone()
    }

    /// The last lines of every container log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let Ok(pods) = std::fs::read_dir(&self.shared.opts.dir) else {
            return out;
        };
        for pod in pods.flatten() {
            for f in std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = f.path();
                if p.extension().and_then(|e| e.to_str()) == Some("log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    out.push_str(&format!("--- {}\n", p.display()));
                    for l in tail.into_iter().rev() {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// Stops every pod and the node's network.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

async fn register(client: &Client) -> Result<(), String> {
    let nodes: Api<KubeNode> = Api::all(client.clone());
    let node: KubeNode = serde_json::from_value(json!({
        "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"}},
    }))
    .unwrap();
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(format!("creating Node {NODE_NAME}: {e}")),
    }
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "stand-in node of the chart-run test"}],
        "addresses": [{"type": "InternalIP", "address": net::GATEWAY.to_string()}],
    }});
    nodes
        .patch_status(NODE_NAME, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map_err(|e| format!("Node status: {e}"))?;
    Ok(())
}

/// The node's loop: Services first (their proxies), then Pods.
async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut pods: HashMap<String, PodRun> = HashMap::new();
    let all: Api<Pod> = Api::all(shared.client.clone());
    while !stop.is_cancelled() {
        if let Err(e) = shared.services.sync().await {
            shared.problem(e);
        }
        if let Ok(list) = all.list(&ListParams::default()).await {
            let mut seen = Vec::new();
            for pod in list {
                let uid = pod.uid().unwrap_or_default();
                seen.push(uid.clone());
                let ours = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_none_or(|n| n == NODE_NAME);
                if !ours {
                    continue;
                }
                if pod.metadata.deletion_timestamp.is_some() {
                    if let Some(mut run) = pods.remove(&uid) {
                        run.stop(&shared).await;
                    }
                    finish_deletion(&shared, &pod).await;
                    continue;
                }
                match pods.get_mut(&uid) {
                    Some(run) => run.tick(&shared, &pod).await,
                    None => {
                        let terminal = matches!(
                            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        );
                        if terminal {
                            continue;
                        }
                        match PodRun::start(&shared, &pod).await {
                            Ok(mut run) => {
                                run.tick(&shared, &pod).await;
                                pods.insert(uid, run);
                            }
                            Err(e) => shared.problem(format!("pod {}: {e}", pod_key(&pod))),
                        }
                    }
                }
            }
            let gone: Vec<String> = pods.keys().filter(|u| !seen.contains(u)).cloned().collect();
            for uid in gone {
                if let Some(mut run) = pods.remove(&uid) {
                    run.stop(&shared).await;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    for (_, mut run) in pods.drain() {
        run.stop(&shared).await;
    }
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// The kubelet's last word on a deleted pod: its containers are gone, so the
/// object may go (grace period 0).
async fn finish_deletion(shared: &Shared, pod: &Pod) {
    let api: Api<Pod> =
        Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
    let _ = api
        .delete(
            &pod.name_any(),
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await;
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

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

pub mod net;
mod sandbox;
mod services;
mod standins;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Node as KubeNode, Pod, Probe, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::common::Receiver;
use net::NodeNet;
use sandbox::Launch;
use services::Services;
use standins::Image;

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

/// One container of a running pod.
struct ContainerRun {
    spec: Container,
    image: Image,
    child: Option<tokio::process::Child>,
    /// The child's pid (tokio forgets it once the child is reaped).
    pid: Option<u32>,
    standin: Option<standins::Running>,
    started_at: Option<String>,
    started: Option<Instant>,
    restarts: i32,
    ready: bool,
    last_readiness: Option<Instant>,
    last_liveness: Option<Instant>,
    liveness_failures: i32,
    /// (exit code, finished at)
    terminated: Option<(i32, String)>,
    /// (reason, message) while it cannot start.
    waiting: Option<(String, String)>,
    log: PathBuf,
}

/// A pod on this node.
struct PodRun {
    ns: String,
    name: String,
    ip: Ipv4Addr,
    netns: Option<PathBuf>,
    hosts: PathBuf,
    service_account: Option<PathBuf>,
    restart_policy: String,
    grace: Duration,
    start_time: String,
    containers: Vec<ContainerRun>,
    last_status: Option<Value>,
}

impl PodRun {
    async fn start(shared: &Shared, pod: &Pod) -> Result<PodRun, String> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let spec = pod.spec.clone().ok_or("no spec")?;
        let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
        if spec.node_name.is_none() {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
            });
            api.create_subresource::<_, Value>("binding", &name, &PostParams::default(), &binding)
                .await
                .map_err(|e| format!("binding to {NODE_NAME}: {e}"))?;
        }
        let mut containers = Vec::new();
        let dir = shared.opts.dir.join(format!("{ns}_{name}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for c in &spec.containers {
            let image_name = c.image.clone().unwrap_or_default();
            let (image, waiting) = match Image::of(&image_name) {
                Some(i) => (i, None),
                None => {
                    shared.problem(format!(
                        "pod {ns}/{name}: image {image_name} cannot be pulled here and has no stand-in"
                    ));
                    (
                        Image::Echo,
                        Some((
                            "ErrImagePull".to_string(),
                            format!("{image_name}: no registry is reachable from this node"),
                        )),
                    )
                }
            };
            containers.push(ContainerRun {
                log: dir.join(format!("{}.log", c.name)),
                spec: c.clone(),
                image,
                child: None,
                pid: None,
                standin: None,
                started_at: None,
                started: None,
                restarts: 0,
                ready: false,
                last_readiness: None,
                last_liveness: None,
                liveness_failures: 0,
                terminated: None,
                waiting,
            });
        }
        let sandboxed = containers.iter().all(|c| matches!(c.image, Image::Hookit));
        let ip = shared.net.allocate()?;
        let netns = if sandboxed {
            Some(shared.net.pod_namespace(ip)?)
        } else {
            if containers.len() != 1 {
                return Err("a stand-in pod has exactly one container".into());
            }
            shared.net.add_address(ip)?;
            None
        };
        // What the kubelet writes: the pod's own name in /etc/hosts, and the
        // cluster DNS with the namespace's search path in resolv.conf.
        let hosts = dir.join("hosts");
        let hosts_text =
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n{ip}\t{name}\n");
        std::fs::write(&hosts, hosts_text).map_err(|e| e.to_string())?;
        let resolv_text = format!(
            "nameserver {}\nsearch {ns}.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5 timeout:1 attempts:2\n",
            net::GATEWAY
        );
        std::fs::write(dir.join("resolv.conf"), resolv_text).map_err(|e| e.to_string())?;
        let service_account = if sandboxed && spec.automount_service_account_token != Some(false) {
            let sa = spec
                .service_account_name
                .clone()
                .unwrap_or("default".into());
            Some(write_token(shared, &ns, &sa, &dir.join("serviceaccount")).await?)
        } else {
            None
        };
        Ok(PodRun {
            ns,
            name,
            ip,
            netns,
            hosts,
            service_account,
            restart_policy: spec.restart_policy.clone().unwrap_or("Always".into()),
            grace: Duration::from_secs(
                spec.termination_grace_period_seconds
                    .unwrap_or(30)
                    .clamp(1, 10) as u64,
            ),
            start_time: now(),
            containers,
            last_status: None,
        })
    }

    /// Starts what should run, probes, restarts, and reports the status.
    async fn tick(&mut self, shared: &Shared, pod: &Pod) {
        for i in 0..self.containers.len() {
            self.reap(shared, i);
            let c = &self.containers[i];
            let waiting_on_image = matches!(&c.waiting, Some((r, _)) if r == "ErrImagePull");
            let should_start = c.child.is_none()
                && c.standin.is_none()
                && !waiting_on_image
                && match &c.terminated {
                    None => true,
                    Some((code, _)) => match self.restart_policy.as_str() {
                        "Always" => true,
                        "OnFailure" => *code != 0,
                        _ => false,
                    },
                };
            if should_start {
                if let Err(e) = self.start_container(shared, pod, i).await {
                    self.containers[i].waiting = Some(("CreateContainerConfigError".into(), e));
                }
            }
            self.probe(shared, i).await;
        }
        self.report(shared).await;
    }

    /// Notices a container process that exited.
    fn reap(&mut self, shared: &Shared, i: usize) {
        let c = &mut self.containers[i];
        let Some(child) = c.child.as_mut() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            c.child = None;
            c.ready = false;
            c.terminated = Some((status.code().unwrap_or(128), now()));
            if let Some(pid) = c.pid.take() {
                shared.processes.lock().unwrap().retain(|p| p.pid != pid);
            }
        }
    }

    async fn start_container(
        &mut self,
        shared: &Shared,
        pod: &Pod,
        i: usize,
    ) -> Result<(), String> {
        let env = resolve_env(shared, pod, &self.containers[i].spec, self.ip).await?;
        if let Some(netns) = self.netns.clone() {
            let c = &self.containers[i];
            let launch = launch(shared, pod, &c.spec, env, self, &c.log)?;
            let child = sandbox::start(&netns, &launch).map_err(|e| e.to_string())?;
            if let Some(pid) = child.id() {
                shared.processes.lock().unwrap().push(ContainerProcess {
                    name: format!("{}/{}/{}", self.ns, self.name, c.spec.name),
                    pid,
                });
            }
            self.containers[i].pid = child.id();
            self.containers[i].child = Some(child);
        } else {
            let env: HashMap<String, String> = env.into_iter().collect();
            let c = &mut self.containers[i];
            let running = standins::start(&shared.net, &c.image, self.ip, &env).await?;
            if let standins::Running::Echo(r) = &running {
                let key = format!("{}/{}", self.ns, self.name);
                shared.echo.lock().unwrap().push((key, r.clone()));
            }
            c.standin = Some(running);
            // A stand-in serves once it listens; the manifest's exec probes
            // would run in an image that is not here.
            c.ready = true;
        }
        let c = &mut self.containers[i];
        if c.terminated.is_some() {
            c.restarts += 1;
        }
        c.waiting = None;
        c.terminated = None;
        c.started_at = Some(now());
        c.started = Some(Instant::now());
        c.liveness_failures = 0;
        Ok(())
    }

    async fn probe(&mut self, shared: &Shared, i: usize) {
        let ip = self.ip;
        let c = &mut self.containers[i];
        if c.child.is_none() {
            return;
        }
        let since_start = c.started.map(|s| s.elapsed()).unwrap_or_default();
        match c.spec.readiness_probe.clone() {
            None => c.ready = true,
            Some(p) => {
                if c.last_readiness
                    .is_none_or(|t| t.elapsed() >= READINESS_PERIOD)
                    && since_start >= delay(&p)
                {
                    c.last_readiness = Some(Instant::now());
                    match probe_once(shared, &c.spec, &p, ip).await {
                        Ok(ok) => c.ready = ok,
                        Err(e) => {
                            shared.problem(e);
                            c.ready = false;
                        }
                    }
                }
            }
        }
        if let Some(p) = c.spec.liveness_probe.clone() {
            let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
            if since_start >= delay(&p) && c.last_liveness.is_none_or(|t| t.elapsed() >= period) {
                c.last_liveness = Some(Instant::now());
                if probe_once(shared, &c.spec, &p, ip).await == Ok(true) {
                    c.liveness_failures = 0;
                } else {
                    c.liveness_failures += 1;
                    if c.liveness_failures >= p.failure_threshold.unwrap_or(3) {
                        // The kubelet kills the container; reap/start restart it.
                        if let Some(child) = c.child.as_mut() {
                            let _ = child.start_kill();
                        }
                        c.liveness_failures = 0;
                    }
                }
            }
        }
    }

    /// Writes the pod status when it changed.
    async fn report(&mut self, shared: &Shared) {
        let mut statuses = Vec::new();
        let mut all_ready = true;
        let mut all_done = true;
        let mut all_succeeded = true;
        for c in &self.containers {
            let state = if c.child.is_some() || c.standin.is_some() {
                all_done = false;
                json!({"running": {"startedAt": c.started_at}})
            } else if let Some((code, at)) = &c.terminated {
                if *code != 0 {
                    all_succeeded = false;
                }
                let reason = if *code == 0 { "Completed" } else { "Error" };
                json!({"terminated": {"exitCode": code, "reason": reason,
                                      "startedAt": c.started_at, "finishedAt": at}})
            } else {
                all_done = false;
                let (reason, message) = c
                    .waiting
                    .clone()
                    .unwrap_or(("ContainerCreating".into(), String::new()));
                json!({"waiting": {"reason": reason, "message": message}})
            };
            all_ready &= c.ready;
            statuses.push(json!({
                "name": c.spec.name,
                "image": c.spec.image,
                "imageID": "",
                "ready": c.ready,
                "started": c.child.is_some() || c.standin.is_some(),
                "restartCount": c.restarts,
                "state": state,
            }));
        }
        let restarting = self.restart_policy == "Always"
            || (self.restart_policy == "OnFailure" && !all_succeeded);
        let phase = if all_done && !restarting {
            if all_succeeded {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if self
            .containers
            .iter()
            .any(|c| c.child.is_some() || c.standin.is_some())
        {
            "Running"
        } else {
            "Pending"
        };
        let ready = if all_ready && phase == "Running" {
            "True"
        } else {
            "False"
        };
        let status = json!({
            "phase": phase,
            "hostIP": net::GATEWAY.to_string(),
            "hostIPs": [{"ip": net::GATEWAY.to_string()}],
            "podIP": self.ip.to_string(),
            "podIPs": [{"ip": self.ip.to_string()}],
            "startTime": self.start_time,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": ready},
                {"type": "Ready", "status": ready},
            ],
            "containerStatuses": statuses,
        });
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(shared.client.clone(), &self.ns);
        let patch = Patch::Merge(json!({ "status": status }));
        if api
            .patch_status(&self.name, &PatchParams::default(), &patch)
            .await
            .is_ok()
        {
            self.last_status = Some(status);
        }
    }

    /// SIGTERM, the grace period (capped), SIGKILL; then the pod's network.
    async fn stop(&mut self, shared: &Shared) {
        for c in &mut self.containers {
            c.standin = None;
            if let Some(pid) = c.pid.take() {
                shared.processes.lock().unwrap().retain(|p| p.pid != pid);
            }
            let Some(mut child) = c.child.take() else {
                continue;
            };
            if let Some(pid) = child.id() {
                // SAFETY: signalling our own, not yet reaped, child by pid.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            if tokio::time::timeout(self.grace, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        let key = format!("{}/{}", self.ns, self.name);
        shared.echo.lock().unwrap().retain(|(k, _)| *k != key);
        if let Some(n) = self.netns.take() {
            shared.net.remove_pod_namespace(&n);
        }
    }
}

fn delay(p: &Probe) -> Duration {
    Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64)
}

/// One probe of a sandboxed container: `httpGet` or `tcpSocket` on the pod IP.
async fn probe_once(
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
        return Ok(
            sandbox::http_get(&shared.net, SocketAddr::from((ip, port)), &path, timeout).await,
        );
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

/// A token for the pod's ServiceAccount (TokenRequest, as the kubelet asks for
/// it), with the CA and namespace, in `dir`.
async fn write_token(shared: &Shared, ns: &str, sa: &str, dir: &Path) -> Result<PathBuf, String> {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&shared.opts.kubeconfig)
        .args(["-n", ns, "create", "token", sa, "--duration=1h"])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "ServiceAccount {ns}/{sa}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::write(dir.join("token"), token).map_err(|e| e.to_string())?;
    std::fs::copy(&shared.opts.ca, dir.join("ca.crt")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("namespace"), ns).map_err(|e| e.to_string())?;
    Ok(dir.to_path_buf())
}

/// The sandbox settings of one container, from its pod spec.
fn launch(
    shared: &Shared,
    pod: &Pod,
    c: &Container,
    env: Vec<(String, String)>,
    run: &PodRun,
    log: &Path,
) -> Result<Launch, String> {
    let spec = pod.spec.as_ref().ok_or("no spec")?;
    let psc = spec.security_context.clone().unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let uid = csc.run_as_user.or(psc.run_as_user);
    let gid = csc.run_as_group.or(psc.run_as_group);
    if csc.run_as_non_root.or(psc.run_as_non_root) == Some(true) && uid.unwrap_or(0) == 0 {
        // The image's USER is 65532, but a pod that says runAsNonRoot without a
        // uid relies on the image metadata, which this node does not read.
        return Err("runAsNonRoot is set but no runAsUser is given".into());
    }
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let mut argv = match &c.command {
        Some(cmd) => cmd.iter().map(|a| expand(a, &vars)).collect(),
        None => vec![sandbox::IMAGE_BINARY.to_string()],
    };
    argv.extend(c.args.iter().flatten().map(|a| expand(a, &vars)));
    let empty_dirs: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.empty_dir.is_some())
        .flat_map(|v| {
            c.volume_mounts
                .iter()
                .flatten()
                .filter(|m| m.name == v.name)
                .map(|m| m.mount_path.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    let drop_all = csc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.as_ref())
        .is_some_and(|d| d.iter().any(|x| x == "ALL"));
    Ok(Launch {
        argv,
        env,
        uid,
        gid,
        read_only_root: csc.read_only_root_filesystem == Some(true),
        drop_all_capabilities: drop_all,
        no_new_privileges: csc.allow_privilege_escalation == Some(false),
        empty_dirs,
        service_account: run.service_account.clone(),
        hosts: run.hosts.clone(),
        resolv_conf: run.hosts.with_file_name("resolv.conf"),
        image_binary: shared.opts.binary.clone(),
        log: log.to_path_buf(),
    })
}

/// `$(VAR)` expansion as the kubelet does it (`$$` escapes; unknown stays).
fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) if vars.contains_key(&inner[..end]) => {
                    out.push_str(&vars[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment as the kubelet builds it: service-link
/// variables (unless the pod turns them off) and the master Service's, then
/// `envFrom`, then `env` (later wins), with references resolved.
async fn resolve_env(
    shared: &Shared,
    pod: &Pod,
    c: &Container,
    ip: Ipv4Addr,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.namespace().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or("no spec")?;
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        vars.retain(|(x, _)| *x != k);
        vars.push((k, v));
    };
    let services: Api<Service> = Api::namespaced(shared.client.clone(), &ns);
    let mut linked: Vec<Service> = Vec::new();
    if spec.enable_service_links != Some(false) {
        linked.extend(
            services
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let default: Api<Service> = Api::namespaced(shared.client.clone(), "default");
    if let Ok(k) = default.get("kubernetes").await {
        linked.retain(|s| !(ns == "default" && s.name_any() == "kubernetes"));
        linked.push(k);
    }
    for svc in &linked {
        for (k, v) in service_link_vars(svc) {
            set(&mut vars, k, v);
        }
    }
    let secrets: Api<Secret> = Api::namespaced(shared.client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(shared.client.clone(), &ns);
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.secret_ref {
            match secrets.get(&r.name).await {
                Ok(s) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        set(
                            &mut vars,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into(),
                        );
                    }
                }
                Err(_) if r.optional == Some(true) => {}
                Err(e) => return Err(format!("secret {:?} not found: {e}", r.name)),
            }
        }
        if let Some(r) = &from.config_map_ref {
            match config_maps.get(&r.name).await {
                Ok(m) => {
                    for (k, v) in m.data.unwrap_or_default() {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                Err(_) if r.optional == Some(true) => {}
                Err(e) => return Err(format!("configmap {:?} not found: {e}", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(v) = env_value(e, pod, ip, &secrets, &config_maps, &vars).await? {
            set(&mut vars, e.name.clone(), v);
        }
    }
    Ok(vars)
}

async fn env_value(
    e: &EnvVar,
    pod: &Pod,
    ip: Ipv4Addr,
    secrets: &Api<Secret>,
    config_maps: &Api<ConfigMap>,
    earlier: &[(String, String)],
) -> Result<Option<String>, String> {
    let Some(from) = &e.value_from else {
        let vars: HashMap<String, String> = earlier.iter().cloned().collect();
        return Ok(Some(expand(e.value.as_deref().unwrap_or_default(), &vars)));
    };
    if let Some(r) = &from.secret_key_ref {
        return match secrets.get(&r.name).await {
            Ok(s) => match s.data.unwrap_or_default().get(&r.key) {
                Some(v) => Ok(Some(String::from_utf8_lossy(&v.0).into())),
                None if r.optional == Some(true) => Ok(None),
                None => Err(format!("couldn't find key {} in Secret {}", r.key, r.name)),
            },
            Err(_) if r.optional == Some(true) => Ok(None),
            Err(err) => Err(format!("secret {:?} not found: {err}", r.name)),
        };
    }
    if let Some(r) = &from.config_map_key_ref {
        return match config_maps.get(&r.name).await {
            Ok(m) => match m.data.unwrap_or_default().get(&r.key) {
                Some(v) => Ok(Some(v.clone())),
                None if r.optional == Some(true) => Ok(None),
                None => Err(format!(
                    "couldn't find key {} in ConfigMap {}",
                    r.key, r.name
                )),
            },
            Err(_) if r.optional == Some(true) => Ok(None),
            Err(err) => Err(format!("configmap {:?} not found: {err}", r.name)),
        };
    }
    if let Some(f) = &from.field_ref {
        let spec = pod.spec.as_ref();
        let v = match f.field_path.as_str() {
            "metadata.name" => pod.name_any(),
            "metadata.namespace" => pod.namespace().unwrap_or_default(),
            "metadata.uid" => pod.uid().unwrap_or_default(),
            "spec.nodeName" => NODE_NAME.to_string(),
            "spec.serviceAccountName" => spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or("default".into()),
            "status.podIP" => ip.to_string(),
            "status.hostIP" => net::GATEWAY.to_string(),
            other => return Err(format!("fieldRef {other} is not supported on this node")),
        };
        return Ok(Some(v));
    }
    Err(format!(
        "env {}: resourceFieldRef is not supported on this node",
        e.name
    ))
}

/// `<NAME>_SERVICE_HOST`, `<NAME>_PORT_8080_TCP_ADDR`, ... as the kubelet injects them.
fn service_link_vars(svc: &Service) -> Vec<(String, String)> {
    let Some(spec) = &svc.spec else {
        return vec![];
    };
    let Some(ip) = spec
        .cluster_ip
        .clone()
        .filter(|ip| ip != "None" && !ip.is_empty())
    else {
        return vec![];
    };
    let name = svc.name_any().to_uppercase().replace('-', "_");
    let ports = spec.ports.clone().unwrap_or_default();
    let mut out = vec![(format!("{name}_SERVICE_HOST"), ip.clone())];
    if let Some(first) = ports.first() {
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        let proto = first
            .protocol
            .clone()
            .unwrap_or("TCP".into())
            .to_lowercase();
        out.push((
            format!("{name}_PORT"),
            format!("{proto}://{ip}:{}", first.port),
        ));
    }
    for p in &ports {
        let proto = p.protocol.clone().unwrap_or("TCP".into());
        if let Some(pn) = &p.name {
            out.push((
                format!(
                    "{name}_SERVICE_PORT_{}",
                    pn.to_uppercase().replace('-', "_")
                ),
                p.port.to_string(),
            ));
        }
        let base = format!("{name}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((
            base.clone(),
            format!("{}://{ip}:{}", proto.to_lowercase(), p.port),
        ));
        out.push((format!("{base}_PROTO"), proto.to_lowercase()));
        out.push((format!("{base}_PORT"), p.port.to_string()));
        out.push((format!("{base}_ADDR"), ip.clone()));
    }
    out
}

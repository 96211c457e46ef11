//! One pod on the node: binding, starting its containers (sandboxed, or as
//! stand-ins), probing them, restarting them by the pod's restartPolicy,
//! reporting its status like a kubelet, and stopping it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

use super::env::{expand, resolve_env};
use super::probe::{delay, probe_once};
use super::sandbox::{self, Launch};
use super::standins::{self, Image};
use super::{net, now, ContainerProcess, Shared, NODE_NAME, READINESS_PERIOD};

/// One container of a running pod.
struct ContainerRun {
    spec: Container,
    /// None: the image cannot run here (the container waits in ErrImagePull).
    image: Option<Image>,
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
pub(super) struct PodRun {
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
    pub(super) async fn start(shared: &Shared, pod: &Pod) -> Result<PodRun, String> {
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
            let image = Image::of(&image_name);
            let waiting = match &image {
                Some(_) => None,
                None => {
                    shared.problem(format!(
                        "pod {ns}/{name}: image {image_name} cannot be pulled here and has no stand-in"
                    ));
                    Some((
                        "ErrImagePull".to_string(),
                        format!("{image_name}: no registry is reachable from this node"),
                    ))
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
        let sandboxed = containers
            .iter()
            .all(|c| matches!(c.image, Some(Image::Hookit)));
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
    pub(super) async fn tick(&mut self, shared: &Shared, pod: &Pod) {
        for i in 0..self.containers.len() {
            self.reap(shared, i);
            let c = &self.containers[i];
            let should_start = c.child.is_none()
                && c.standin.is_none()
                && c.image.is_some()
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
            let image = c.image.as_ref().ok_or("the image cannot run here")?;
            let running = standins::start(&shared.net, image, self.ip, &env).await?;
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
    pub(super) async fn stop(&mut self, shared: &Shared) {
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

//! The chart-run stage: the README's Kubernetes commands, read from README.md
//! and run as written on a real single-node cluster of this test's own
//! (`scripts/kubelet-node.sh`: kubelet, containerd and runc, kube-proxy,
//! CoreDNS, the real kube-controller-manager and kube-scheduler). Only the two
//! lines that need kind and docker are replaced. `helm install --wait` must see
//! the migration hook Job complete and every Deployment become available; the
//! example endpoint must become Ready, which needs the controller pod to reach
//! the API server through the `kubernetes` Service with its ServiceAccount
//! token; and an event published to the chart's Service, as docs/kubernetes.md
//! publishes it, must reach the example receiver (found through cluster DNS)
//! signed with the endpoint's secret. Every HookIt process must have run as the
//! pod spec says: uid 65532, no capabilities, no privilege escalation,
//! read-only root, in its pod's cgroup, with no restart.
//!
//! The two public images the examples name come from the node's stand-ins
//! (`scripts/node-images.sh`): `postgres:17-bookworm` is Debian's
//! PostgreSQL, and the echo receiver logs each request as the real one does;
//! the test reads that log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hookit::operator::WebhookEndpoint;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::Value;

use super::env::{bins_dir, client_for, repo, wait_for};
use super::kubelet_node::{
    assert_confined, build_image, hookit_processes, prerequisites, KubeletNode,
};

/// The README lines this test cannot run as written, and what stands in for them.
const REPLACED: [(&str, &str); 2] = [
    (
        "kind create cluster",
        "scripts/kubelet-node.sh start: the test's own single-node cluster",
    ),
    (
        "docker build -t ",
        "the binary under test, imported into the node's containerd under the README's tag",
    ),
];

/// Commands of the first `sh` block after `heading` in `file`, with
/// backslash-continued lines joined.
fn commands(file: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let section = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("{file}: no {heading:?}"))..];
    let block = section.split("```sh\n").nth(1).expect("an sh block");
    let block = &block[..block.find("```").expect("end of the sh block")];
    let mut out = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.split(" # ").next().unwrap_or_default().trim_end();
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(&format!("{} ", head.trim_end())),
            None => {
                current.push_str(line.trim());
                if !current.trim().is_empty() {
                    out.push(current.trim().to_string());
                }
                current.clear();
            }
        }
    }
    out
}

/// Runs one documented command on the host (which is the node) with the
/// cluster's kubeconfig and the built helm on PATH.
async fn sh(kubeconfig: &Path, cmd: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let path = format!(
        "{}:{}",
        bins_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = tokio::process::Command::new("bash");
    c.args(["-euo", "pipefail", "-c", cmd])
        .current_dir(repo())
        .env("KUBECONFIG", kubeconfig)
        .env("PATH", path)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(360), c.output())
        .await
        .unwrap_or_else(|_| panic!("{cmd}: still running after 6 minutes"))
        .expect("running bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A request as the example receiver logged it (tests/k8s-bins/node/echo.c).
struct Logged {
    path: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

fn parse_logged(line: &str) -> Option<Logged> {
    let v: Value = serde_json::from_str(line).ok()?;
    let mut headers = http::HeaderMap::new();
    for pair in v["headers"].as_array()? {
        let name = http::HeaderName::from_bytes(pair[0].as_str()?.as_bytes()).ok()?;
        let value = http::HeaderValue::from_str(pair[1].as_str()?).ok()?;
        headers.append(name, value);
    }
    Some(Logged {
        path: v["path"].as_str()?.to_string(),
        headers,
        body: {
            let hex = v["body_hex"].as_str()?;
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_install_runs_on_a_real_kubelet_and_delivers_through_its_service() {
    if let Err(why) = prerequisites() {
        return super::skip_node_test("chart-run", "HOOKIT_CHART_RUN", &why);
    }
    let _one_node = super::NODE_LOCK.lock().await;
    let readme = commands("README.md", "## Run on Kubernetes");
    for (prefix, _) in REPLACED {
        assert!(
            readme.iter().any(|c| c.starts_with(prefix)),
            "the README no longer starts a command with {prefix:?}: update this test"
        );
    }
    // The image under the tag the README builds and loads into kind.
    let tag = readme
        .iter()
        .find_map(|c| c.strip_prefix("docker build -t "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the README's image tag")
        .to_string();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("readme-node-{}", std::process::id()));
    let node = KubeletNode::start(dir.clone());
    node.import(&build_image(&dir, &tag));
    let client = client_for(&node.kubeconfig).await;
    run(&node, &client, &readme).await;
    drop(node);
}

async fn run(node: &KubeletNode, client: &Client, readme: &[String]) {
    let fail = |what: String| -> ! {
        panic!(
            "{what}\nnode logs (kubelet, containerd, kube-proxy, coredns, kube/*.log) and \
             container logs (/var/log/pods) in {}",
            node.dir.display()
        )
    };

    // 1. The README, verbatim but for the two lines that need kind and docker.
    for cmd in readme
        .iter()
        .filter(|c| !REPLACED.iter().any(|(p, _)| c.starts_with(p)))
    {
        let (ok, out, err) = sh(&node.kubeconfig, cmd, &[]).await;
        if !ok {
            let pods: Api<Pod> = Api::all(client.clone());
            let states: Vec<_> = pods
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .into_iter()
                        .map(|p| (p.metadata.name, p.status.and_then(|s| s.container_statuses)))
                        .collect()
                })
                .unwrap_or_default();
            fail(format!(
                "README command failed: {cmd}\nstdout: {out}\nstderr: {err}\npods: {states:#?}"
            ));
        }
    }

    // 2. The example endpoint is Ready: the controller pod reached the API
    //    server through the `kubernetes` Service with its own token.
    let endpoints: Api<WebhookEndpoint> = Api::namespaced(client.clone(), "payments");
    let ready = wait_for(
        "payments/orders Ready=True",
        Duration::from_secs(120),
        || {
            let endpoints = endpoints.clone();
            async move {
                let we = endpoints.get("orders").await.map_err(|e| e.to_string())?;
                let st = we.status.clone().unwrap_or_default();
                let c = st.conditions.iter().find(|c| c.type_ == "Ready");
                match c {
                    Some(c) if c.status == "True" => Ok(we),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    assert!(ready.status.unwrap().endpoint_id.is_some());

    // 3. Publish as docs/kubernetes.md does, to the chart's Service: its
    //    ClusterIP and port stand for kind's port mapping, and kube-proxy's
    //    rules on this host (the node) take the request to an API container.
    let svc: Service = Api::namespaced(client.clone(), "hookit")
        .get("hookit")
        .await
        .expect("the chart's Service hookit/hookit");
    let spec = svc.spec.as_ref().unwrap();
    let ip = spec.cluster_ip.clone().expect("a ClusterIP");
    let port = spec.ports.as_ref().unwrap()[0].port;
    let publish = commands("docs/kubernetes.md", "## 7. Publish an event");
    assert!(publish.len() >= 2 && publish[1].contains("http://127.0.0.1:30080/v1/events"));
    let (ok, key, err) = sh(
        &node.kubeconfig,
        &format!("{}\nprintf %s \"$KEY\"", publish[0]),
        &[],
    )
    .await;
    assert!(
        ok && !key.is_empty(),
        "reading the API key as documented: {err}"
    );
    let curl = format!(
        "{} -o /dev/null -w '%{{http_code}}'",
        publish[1].replace("http://127.0.0.1:30080", &format!("http://{ip}:{port}"))
    );
    let (ok, out, err) = sh(&node.kubeconfig, &curl, &[("KEY", &key)]).await;
    if !ok || out.trim() != "202" {
        fail(format!(
            "publishing through the Service {ip}:{port}: HTTP {out:?}, {err}"
        ));
    }

    // 4. The example receiver logged it, signed with the endpoint's secret.
    let req = wait_for(
        "a delivery in the example receiver's log",
        Duration::from_secs(60),
        || async {
            node.container_log("payments", "webhook-receiver-", "echo", Some("stdout"))
                .iter()
                .filter_map(|l| parse_logged(l))
                .find(|r| r.path == "/hooks/orders")
                .ok_or_else(|| "nothing logged yet".to_string())
        },
    )
    .await;
    assert_eq!(
        req.headers.get("x-team").and_then(|v| v.to_str().ok()),
        Some("fulfilment")
    );
    let signing: Secret = Api::namespaced(client.clone(), "payments")
        .get("orders-signing")
        .await
        .expect("Secret payments/orders-signing");
    let secret = String::from_utf8(signing.data.unwrap()["secret"].0.clone()).unwrap();
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&req.body, &req.headers)
        .expect("the delivery verifies with the endpoint's signing secret");
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["type"], "order.created");
    assert_eq!(body["data"]["order_id"], "ord_1001");

    // 5. Every chart pod ran as its spec says, and none restarted.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "hookit");
    let list = pods.list(&ListParams::default()).await.unwrap();
    let mut names = Vec::new();
    for p in &list {
        let name = p.metadata.name.clone().unwrap();
        let st = p.status.clone().unwrap_or_default();
        if st.phase.as_deref() != Some("Running") {
            continue;
        }
        for cs in st.container_statuses.unwrap_or_default() {
            assert!(cs.ready, "{name}/{} is not ready", cs.name);
            assert_eq!(cs.restart_count, 0, "{name}/{} restarted", cs.name);
        }
        names.push(name);
    }
    for component in ["hookit-controller-", "hookit-worker-", "postgres-0"] {
        assert!(
            names.iter().any(|n| n.starts_with(component)),
            "no running pod {component}* in {names:?}"
        );
    }
    let processes = hookit_processes();
    let count = |role: &str| {
        processes
            .iter()
            .filter(|p| p.cmdline.ends_with(&format!(" {role}")))
            .count()
    };
    assert_eq!(
        (count("controller"), count("worker"), count("api")),
        (2, 2, 2),
        "2 controllers, and 2 worker pods of a worker and an API each: {processes:#?}"
    );
    processes.iter().for_each(assert_confined);
}

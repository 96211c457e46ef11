//! The chart-run stage: the README's Kubernetes commands, run verbatim against a
//! control plane of this test's own (kube-apiserver, etcd and the real
//! kube-controller-manager) with the stand-in node of `super::node` running the
//! Pods. `helm install --wait` must see the migration hook Job complete and
//! every Deployment become available; the example endpoint must become Ready;
//! and an event published to the chart's Service, as docs/kubernetes.md
//! publishes it, must reach the example receiver signed with the endpoint's
//! secret. Every HookIt container must have run as the pod spec says: uid
//! 65532, no capabilities, no privilege escalation, read-only root (the
//! sandbox refuses to start otherwise), with no restart.

use std::time::Duration;

use hookit::operator::WebhookEndpoint;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::ListParams;
use kube::{Api, Client};

use super::env::{bins_dir, client_for, repo, wait_for, PrivateEnv};
use super::node::{Node, Options};

/// The README lines this test cannot run as written, and what stands in for them.
const REPLACED: [(&str, &str); 2] = [
    (
        "kind create cluster",
        "the test's control plane and stand-in node",
    ),
    (
        "docker build -t hookit:dev .",
        "the node runs image hookit:dev as the binary under test",
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

/// Runs one documented command with the test cluster's kubeconfig and the
/// built helm on PATH; `netns` runs it inside the node's network (as a pod would).
async fn sh(
    cluster: &PrivateEnv,
    cmd: &str,
    netns: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let path = format!(
        "{}:{}",
        bins_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = match netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("--");
            c.arg("bash");
            c
        }
        None => tokio::process::Command::new("bash"),
    };
    c.args(["-euo", "pipefail", "-c", cmd])
        .current_dir(repo())
        .env("KUBECONFIG", &cluster.kubeconfig)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_install_starts_the_chart_and_delivers_through_its_service() {
    if let Err(why) = super::node_prerequisites(&["ip", "nsenter", "unshare", "setpriv", "curl"]) {
        return super::skip_node_test("chart-run", "HOOKIT_CHART_RUN", &why);
    }
    let _one_node = super::NODE_LOCK.lock().await;
    let Some(cluster) = PrivateEnv::start("chart") else {
        return;
    };
    let client = client_for(&cluster.kubeconfig).await;
    let node = Node::start(
        client.clone(),
        Options {
            kubeconfig: cluster.kubeconfig.clone(),
            ca: cluster.ca(),
            apiserver: cluster.apiserver(),
            binary: env!("CARGO_BIN_EXE_hookit").into(),
            dir: cluster.dir.join("node"),
        },
    )
    .await
    .expect("starting the stand-in node");
    run(&cluster, &client, &node).await;
    node.stop().await;
}

async fn run(cluster: &PrivateEnv, client: &Client, node: &Node) {
    let fail = |what: String| -> ! {
        panic!(
            "{what}\nnode problems: {:?}\ncontainer logs:\n{}",
            node.problems(),
            node.logs()
        )
    };

    // 1. The README, verbatim but for the two lines that need kind and docker.
    let readme = commands("README.md", "## Run on Kubernetes");
    for (prefix, _) in REPLACED {
        assert!(
            readme.iter().any(|c| c.starts_with(prefix)),
            "the README no longer starts a command with {prefix:?}: update this test"
        );
    }
    for cmd in readme
        .iter()
        .filter(|c| !REPLACED.iter().any(|(p, _)| c.starts_with(p)))
    {
        let (ok, out, err) = sh(cluster, cmd, None, &[]).await;
        if !ok {
            fail(format!(
                "README command failed: {cmd}\nstdout: {out}\nstderr: {err}"
            ));
        }
    }

    // 2. The example endpoint is Ready (the controller pod, through the
    //    kubernetes Service and its chart-made RBAC, reconciled it).
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

    // 3. Publish as docs/kubernetes.md does, to the chart's Service from inside
    //    the cluster network (there is no kind port mapping here).
    let svc: Service = Api::namespaced(client.clone(), "hookit")
        .get("hookit")
        .await
        .expect("the chart's Service hookit/hookit");
    let port = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port;
    let ip = node
        .cluster_ip("hookit", "hookit")
        .unwrap_or_else(|| fail("the node does not proxy the chart's Service".into()));
    let publish = commands("docs/kubernetes.md", "## 7. Publish an event");
    assert!(publish.len() >= 2 && publish[1].contains("http://127.0.0.1:30080/v1/events"));
    // The key is read on the host (kubectl talks to the API server there), the
    // request is made from the cluster network.
    let (ok, key, err) = sh(
        cluster,
        &format!("{}\nprintf %s \"$KEY\"", publish[0]),
        None,
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
    let (ok, out, err) = sh(cluster, &curl, Some(&node.netns()), &[("KEY", &key)]).await;
    if !ok || out.trim() != "202" {
        fail(format!(
            "publishing through the Service: HTTP {out:?}, {err}"
        ));
    }

    // 4. The example receiver got it, signed with the endpoint's secret.
    let receiver = wait_for(
        "the example receiver's pod",
        Duration::from_secs(60),
        || async {
            node.echo_receiver("payments")
                .ok_or_else(|| "not running yet".to_string())
        },
    )
    .await;
    let got = tokio::time::timeout(
        Duration::from_secs(60),
        receiver.wait_for(1, Duration::from_secs(60)),
    )
    .await
    .unwrap_or_else(|_| fail("no delivery reached the receiver".into()));
    let req = &got[0];
    assert_eq!(req.path, "/hooks/orders");
    assert_eq!(req.header("x-team"), "fulfilment");
    let signing: Secret = Api::namespaced(client.clone(), "payments")
        .get("orders-signing")
        .await
        .expect("Secret payments/orders-signing");
    let secret = String::from_utf8(signing.data.unwrap()["secret"].0.clone()).unwrap();
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&req.body, &req.headers)
        .expect("the delivery verifies with the endpoint's signing secret");
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
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
    let processes = node.processes();
    assert!(
        processes.len() >= 6,
        "expected 2 controllers and 2 workers × 2 containers: {processes:?}"
    );
    for p in &processes {
        let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap_or_default();
        let field = |k: &str| super::status_field(&status, k);
        assert_eq!(field("Uid:"), ["65532"; 4], "{}: {status}", p.name);
        assert_eq!(field("Gid:"), ["65532"; 4], "{}", p.name);
        assert_eq!(field("CapEff:"), ["0000000000000000"], "{}", p.name);
        assert_eq!(field("CapBnd:"), ["0000000000000000"], "{}", p.name);
        assert_eq!(field("NoNewPrivs:"), ["1"], "{}", p.name);
    }
    assert!(
        node.problems().is_empty(),
        "node problems: {:?}",
        node.problems()
    );
}

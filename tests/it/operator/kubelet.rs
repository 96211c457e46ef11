//! The chart on a real kubelet: `scripts/kubelet-node.sh` brings up a node on
//! this machine (kubelet and kube-scheduler from the k8s.io/kubernetes pin,
//! Debian's containerd and runc, the bridge CNI plugin), the binary under test
//! becomes image `localhost/hookit:dev`, and `helm install` with the README's
//! values must run the migration hook Job and make the worker Deployment
//! available. Then the test checks what runc really did to HookIt's processes
//! (uid 65532, no capabilities, no privilege escalation, a read-only root, the
//! pod's memory cgroup), and that an event published to a pod's API container
//! is delivered by the workers, signed, to a receiver on the node's bridge.
//!
//! The README's own path (controller, Services, DNS, the example Postgres and
//! receiver) is `install.rs`, on the same node. This test keeps what that one
//! does not cover: a database and a receiver outside the cluster (the test's
//! own, reached on the bridge's 10.244.0.1), the worker Deployment without the
//! controller (`controller.enabled=false`), and the API reached on a pod's
//! own address rather than through its Service.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use super::env::{bins_dir, client_for, repo, wait_for};
use super::kubelet_node::{
    assert_confined, build_image, hookit_processes, prerequisites, KubeletNode,
};
use crate::common::{fresh_database, Receiver};

/// The host's address on the pods' bridge (scripts/kubelet-node.sh).
const BRIDGE_IP: &str = "10.244.0.1";
/// What the image is called in the chart's values.
const IMAGE: &str = "localhost/hookit";

/// Forwards connections to `bind` (on the bridge) to `to` (the test's
/// PostgreSQL, which listens on loopback only).
async fn forward(bind: &str, to: std::net::SocketAddr) -> u16 {
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    port
}

/// The JSON body of the answer to `req`.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

async fn create_secret(client: &Client, name: &str, key: &str, value: &str) {
    let s: Secret = serde_json::from_value(json!({
        "metadata": { "name": name },
        "stringData": { key: value },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "hookit")
        .create(&PostParams::default(), &s)
        .await
        .unwrap_or_else(|e| panic!("creating Secret {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_kubelet_runs_the_charts_workers_and_they_deliver_signed() {
    if let Err(why) = prerequisites() {
        return super::skip_node_test("kubelet", "HOOKIT_KUBELET_RUN", &why);
    }
    // One node of either kind at a time: both use 10.244.0.0/24 (in different
    // network namespaces), and the kubelet adds iptables rules to the host's.
    let _one_node = super::NODE_LOCK.lock().await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kubelet-node-{}", std::process::id()));
    let node = KubeletNode::start(dir.clone());
    node.import(&build_image(&dir, &format!("{IMAGE}:dev")));
    let client = client_for(&node.kubeconfig).await;

    // The database and the receiver, on the bridge.
    let db_url = fresh_database().await;
    let mut pod_db_url = url::Url::parse(&db_url).unwrap();
    let pg: std::net::SocketAddr = tokio::net::lookup_host((
        pod_db_url.host_str().unwrap().to_string(),
        pod_db_url.port().unwrap_or(5432),
    ))
    .await
    .unwrap()
    .next()
    .unwrap();
    let db_port = forward(&format!("{BRIDGE_IP}:0"), pg).await;
    pod_db_url.set_host(Some(BRIDGE_IP)).unwrap();
    pod_db_url.set_port(Some(db_port)).unwrap();
    let receiver = Receiver::start_on(
        tokio::net::TcpListener::bind(format!("{BRIDGE_IP}:0"))
            .await
            .unwrap(),
    );
    let master_key = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    };

    // The README's install, with the image made above and the bridge allowed.
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": "hookit" } })).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    create_secret(&client, "hookit-database", "url", pod_db_url.as_str()).await;
    create_secret(&client, "hookit-master-key", "key", &master_key).await;
    let helm = Command::new(bins_dir().join("helm"))
        .args(["install", "hookit"])
        .arg(repo().join("charts/hookit"))
        .args(["-n", "hookit", "--kubeconfig"])
        .arg(&node.kubeconfig)
        .args([
            "--set",
            &format!("image.repository={IMAGE}"),
            "--set",
            "image.tag=dev",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "database.existingSecret=hookit-database",
            "--set",
            "masterKey.existingSecret=hookit-master-key",
            "--set",
            "allowPrivateTargets={10.244.0.0/24}",
            // See the module doc: the workers alone.
            "--set",
            "controller.enabled=false",
            "--wait",
            "--timeout",
            "3m",
        ])
        .output()
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "hookit");
    if !helm.status.success() {
        let list = pods.list(&ListParams::default()).await.unwrap();
        let states: Vec<_> = list
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone(),
                    p.status.clone().unwrap_or_default().container_statuses,
                )
            })
            .collect();
        panic!(
            "helm install failed: {}\npods: {states:#?}\nmigration log: {:#?}\nkubelet log: {}",
            String::from_utf8_lossy(&helm.stderr),
            node.container_log("hookit", "hookit-migrate-", "migrate", None),
            dir.join("kubelet.log").display()
        );
    }

    // The worker Deployment is available, its containers ran from the image
    // and none restarted.
    let deploy = Api::<Deployment>::namespaced(client.clone(), "hookit")
        .get("hookit-worker")
        .await
        .unwrap();
    let want = deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    assert_eq!(
        deploy.status.as_ref().and_then(|s| s.available_replicas),
        Some(want),
        "the worker Deployment is not fully available"
    );
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=worker"))
        .await
        .unwrap();
    let mut pod_ips = Vec::new();
    for p in &list {
        let st = p.status.clone().unwrap_or_default();
        for c in st.container_statuses.unwrap_or_default() {
            assert!(c.ready, "{:?}/{} not ready", p.metadata.name, c.name);
            assert_eq!(
                c.restart_count, 0,
                "{:?}/{} restarted",
                p.metadata.name, c.name
            );
            assert!(c.image.contains(IMAGE), "{} ran image {}", c.name, c.image);
        }
        pod_ips.extend(st.pod_ip);
    }
    assert_eq!(pod_ips.len(), want as usize, "worker pods with an address");

    // What runc did to the processes: the pod spec's user, no capabilities, no
    // privilege escalation, a read-only root, and the pod's cgroup.
    let procs = hookit_processes();
    let apis = procs.iter().filter(|p| p.cmdline.ends_with(" api")).count();
    let workers = procs
        .iter()
        .filter(|p| p.cmdline.ends_with(" worker"))
        .count();
    assert_eq!(
        (apis, workers),
        (want as usize, want as usize),
        "one api and one worker process per pod: {procs:#?}"
    );
    procs.iter().for_each(assert_confined);

    // An event published to a pod's API container reaches the receiver, signed
    // with the endpoint's secret.
    let key_out = Command::new(env!("CARGO_BIN_EXE_hookit"))
        .args(["keys", "create", "--tenant", "kubelet"])
        .env("DATABASE_URL", &db_url)
        .env("HOOKIT_MASTER_KEY", &master_key)
        .output()
        .unwrap();
    assert!(key_out.status.success(), "hookit keys create");
    let key = String::from_utf8_lossy(&key_out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let api = format!("http://{}:8080", pod_ips[0]);
    let http = reqwest::Client::new();
    let created = json_of(
        http.post(format!("{api}/v1/endpoints"))
            .bearer_auth(&key)
            .json(&json!({ "url": receiver.url("/hooks/kubelet"), "event_types": ["order.*"] })),
    )
    .await;
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    let secret = json_of(
        http.get(format!("{api}/v1/endpoints/{id}/secret"))
            .bearer_auth(&key),
    )
    .await;
    let published = http
        .post(format!("{api}/v1/events"))
        .bearer_auth(&key)
        .json(&json!({ "event_type": "order.paid", "payload": { "order_id": "ord_7" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 202, "publishing through the pod's API");
    let got = wait_for(
        "a delivery from the pods",
        Duration::from_secs(60),
        || async {
            match receiver.received() {
                r if r.is_empty() => Err("nothing yet".to_string()),
                r => Ok(r),
            }
        },
    )
    .await;
    let req = &got[0];
    assert_eq!(req.path, "/hooks/kubelet");
    standardwebhooks::Webhook::new(secret["secret"].as_str().unwrap())
        .unwrap()
        .verify(&req.body, &req.headers)
        .expect("the delivery verifies with the endpoint's secret");
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["data"]["order_id"], "ord_7");
    drop(node);
}

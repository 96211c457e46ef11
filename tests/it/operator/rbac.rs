//! The real `hookit controller` binary under the chart's ServiceAccount and RBAC
//! rules: render the chart with helm, apply its RBAC objects, log in with a
//! token of the ServiceAccount, and drive every kind of write the controller
//! makes. A permission missing from the chart fails this test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hookit::operator::WebhookEndpoint;
use kube::api::DeleteParams;

use super::env::{helm, kubectl_with, repo, wait_for, Kube};
use super::{apply, events_about, manifest, wait_ready, RECONCILE};
use crate::common::{free_port, TestApp};

const RBAC_KINDS: &[&str] = &[
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// The controller's RBAC objects from `helm template`, and its ServiceAccount.
async fn render_rbac(release: &str, ns: &str) -> (String, String) {
    let helm = helm().expect("helm (scripts/k8s-bins.sh builds one)");
    let chart = repo().join("charts/hookit");
    let out = tokio::process::Command::new(helm)
        .args(["template", release])
        .arg(&chart)
        .arg("-f")
        .arg(chart.join("ci/test-values.yaml"))
        .args(["--namespace", ns])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let mut docs = Vec::new();
    let mut service_account = None;
    for doc in rendered.split("\n---") {
        let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(doc) else {
            continue;
        };
        let kind = v["kind"].as_str().unwrap_or_default();
        let name = v["metadata"]["name"].as_str().unwrap_or_default();
        let component = v["metadata"]["labels"]["app.kubernetes.io/component"].as_str();
        if RBAC_KINDS.contains(&kind) && component == Some("controller") {
            if kind == "ServiceAccount" {
                service_account = Some(name.to_string());
            }
            docs.push(doc.trim().to_string());
        }
    }
    assert_eq!(
        docs.len(),
        RBAC_KINDS.len(),
        "expected one of each {RBAC_KINDS:?}"
    );
    (docs.join("\n---\n"), service_account.unwrap())
}

/// A kubeconfig like the admin one but logged in with `token`.
fn kubeconfig_with_token(admin: &std::path::Path, token: &str, out: &std::path::Path) {
    let mut kc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    let users = kc["users"].as_sequence_mut().unwrap();
    users.truncate(1);
    users[0]["user"] = serde_yaml::to_value(serde_json::json!({ "token": token })).unwrap();
    std::fs::write(out, serde_yaml::to_string(&kc).unwrap()).unwrap();
}

/// The real `hookit controller` binary reconciling one namespace into `app`'s
/// database (1 s feed interval, loopback targets allowed), with `/metrics` on a
/// free port. Its log goes to a file, printed when the test fails; it is killed
/// when dropped.
pub(super) struct ControllerProcess {
    child: tokio::process::Child,
    metrics_port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ControllerProcess {
    /// Starts it with `kubeconfig`, as Lease holder candidate `identity`.
    pub(super) fn spawn(kubeconfig: &Path, app: &TestApp, ns: &str, identity: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("controller.log");
        let metrics_port = free_port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookit"))
            .arg("controller")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", kubeconfig)
            .env("DATABASE_URL", app.cfg.database_url.clone().unwrap())
            .env("HOOKIT_MASTER_KEY", app.cfg_master_key_b64())
            .env("HOOKIT_WATCH_NAMESPACE", ns)
            .env("POD_NAMESPACE", ns)
            .env("POD_NAME", identity)
            .env("HOOKIT_ALLOW_PRIVATE_TARGETS", "127.0.0.0/8")
            .env("HOOKIT_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
            .env("HOOKIT_CONTROLLER_LEASE", "3s")
            .env("HOOKIT_CONTROLLER_RESYNC", "1s")
            .env("HOOKIT_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self {
            child,
            metrics_port,
            log_path,
            _dir: dir,
        }
    }

    /// Its log so far.
    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Its `/metrics` page (empty while it is not serving yet).
    pub(super) async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        match reqwest::get(url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// SIGTERM, and its exit status (bounded wait).
    pub(super) async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the controller did not exit within 30s of SIGTERM")
            .unwrap()
    }
}

impl Drop for ControllerProcess {
    /// Prints the log if the test fails (for a missing permission's name, say).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            eprintln!("---- hookit controller log ----\n{log}\n-------------------------------");
        }
    }
}

/// The sum of the samples of `series` (a metric name, optionally with the
/// start of its labels, e.g. `name{a="b"`) on a Prometheus page.
pub(super) fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with([' ', '{', ',', '}']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_controller_binary_works_with_the_charts_service_account_and_rbac() {
    let Some(kube) = Kube::setup("rbac").await else {
        return;
    };
    if helm().is_none() {
        eprintln!("SKIPPING the RBAC test: no helm (scripts/k8s-bins.sh builds one)");
        return;
    }
    let ns = kube.ns.as_str();
    let release = format!("rbac{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let (rbac, sa) = render_rbac(&release, ns).await;
    let out = kube
        .kubectl(&["apply", "-n", ns, "-f", "-"], Some(&rbac))
        .await;
    assert!(out.ok, "applying the chart's RBAC: {}", out.stderr);
    let token = kube
        .kubectl(&["create", "token", &sa, "-n", ns, "--duration=1h"], None)
        .await;
    assert!(token.ok, "kubectl create token: {}", token.stderr);
    let dir = tempfile::tempdir().unwrap();
    let sa_kubeconfig = dir.path().join("kubeconfig");
    kubeconfig_with_token(&kube.kubeconfig, token.stdout.trim(), &sa_kubeconfig);
    let can = kubectl_with(
        &sa_kubeconfig,
        &[
            "auth",
            "can-i",
            "list",
            "webhookendpoints.hookit.dev",
            "-n",
            ns,
        ],
        None,
    )
    .await;
    assert_eq!(
        can.stdout.trim(),
        "yes",
        "the token does not carry the chart's rules: {}",
        can.stderr
    );
    let cannot = kubectl_with(
        &sa_kubeconfig,
        &["auth", "can-i", "delete", "secrets", "-n", ns],
        None,
    )
    .await;
    assert_eq!(
        cannot.stdout.trim(),
        "no",
        "least privilege: the controller never deletes Secrets"
    );

    let app = TestApp::spawn().await;
    let mut ctl = ControllerProcess::spawn(&sa_kubeconfig, &app, ns, "rbac-controller-0");

    // Every write: finalizer, generated Secret with owner reference, status,
    // Events, the referenced Secret read, the API-key finalizer, cleanup.
    apply(&kube, &format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: byo\n  namespace: {ns}\nstringData:\n  secret: {}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: key\n  namespace: {ns}\n  labels:\n    hookit.dev/api-key: \"true\"\nstringData:\n  key: hk_rbac_{}\n",
        hookit::domain::signing::Secret::generate().expose(),
        uuid::Uuid::new_v4().simple()
    )).await;
    apply(
        &kube,
        &manifest(ns, "generated", "  url: http://127.0.0.1:9/a\n"),
    )
    .await;
    apply(
        &kube,
        &manifest(
            ns,
            "referenced",
            "  url: http://127.0.0.1:9/b\n  secretRef: {name: byo}\n",
        ),
    )
    .await;
    for name in ["generated", "referenced"] {
        wait_ready(&kube, name, "True", None).await;
    }
    assert!(events_about(&kube, "generated")
        .await
        .iter()
        .any(|(r, _)| r == "SigningSecretCreated"));
    let key_secret = kube.api::<k8s_openapi::api::core::v1::Secret>();
    wait_for("the API-key finalizer", RECONCILE, || async {
        let s = key_secret.get("key").await.map_err(|e| e.to_string())?;
        if s.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == hookit::operator::API_KEY_FINALIZER)
        {
            Ok(())
        } else {
            Err("no finalizer yet".into())
        }
    })
    .await;
    let endpoints = kube.api::<WebhookEndpoint>();
    endpoints
        .delete("generated", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the finalizer to let `generated` go", RECONCILE, || async {
        match endpoints.get_opt("generated").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|o| o.is_some()))),
        }
    })
    .await;

    let metrics = ctl.metrics().await;
    for needle in [
        "hookit_controller_reconciles_total{controller=\"webhookendpoint\",result=\"applied\"}",
        "hookit_controller_reconciles_total{controller=\"webhookendpoint\",result=\"retired\"}",
        "hookit_controller_reconciles_total{controller=\"apikey\",result=\"granted\"}",
        "hookit_controller_leader 1",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }
    let text = ctl.log();
    assert!(
        !text.to_lowercase().contains("forbidden"),
        "a request was forbidden:\n{text}"
    );

    // SIGTERM: a clean exit that releases the Lease.
    let status = ctl.terminate().await;
    assert!(status.success(), "exit {status}");
    if std::env::var_os("HOOKIT_SHOW_CONTROLLER_LOG").is_some() {
        eprintln!("{}", ctl.log());
    }

    kube.kubectl(
        &[
            "delete",
            "clusterrole,clusterrolebinding",
            &format!("{release}-hookit-controller"),
            "--ignore-not-found",
        ],
        None,
    )
    .await;
    app.stop().await;
    kube.cleanup().await;
}

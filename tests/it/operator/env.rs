//! A Kubernetes API server for the operator tests: started once per test binary
//! with `scripts/kube-env.sh` (etcd + kube-apiserver from `scripts/k8s-bins.sh`),
//! or an existing cluster named by `HOOKIT_KUBECONFIG`. Each test gets a fresh
//! namespace. Without binaries the tests skip loudly, unless
//! `HOOKIT_REQUIRE_K8S=1`, which turns the skip into a failure.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use hookit::config::Config;
use hookit::db::Store;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// The API server shared by the operator tests of this process.
pub struct Env {
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// An existing cluster (HOOKIT_KUBECONFIG) rather than our own control plane.
    pub external: bool,
}

static ENV: OnceLock<Option<Env>> = OnceLock::new();

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// helm: the one `scripts/k8s-bins.sh` built, else one on PATH.
pub fn helm() -> Option<PathBuf> {
    let built = bins_dir().join("helm");
    if built.is_file() {
        return Some(built);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("helm"))
            .find(|h| h.is_file())
    })
}

/// Where `scripts/k8s-bins.sh` puts the binaries.
pub fn bins_dir() -> PathBuf {
    if let Ok(d) = std::env::var("K8S_BINS_DIR") {
        return d.into();
    }
    let cache = std::env::var("HOOKIT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".cache"));
    cache.join("k8s-bins/bin")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// The environment, starting it on first use; None means "skip this test".
pub fn env() -> Option<&'static Env> {
    ENV.get_or_init(start).as_ref()
}

fn skip_or_fail<T>(why: String) -> Option<T> {
    if std::env::var("HOOKIT_REQUIRE_K8S").as_deref() == Ok("1") {
        panic!("HOOKIT_REQUIRE_K8S=1 but {why}");
    }
    // Straight to the process's stderr: the test harness captures eprintln!.
    let banner = format!(
        "\n**********************************************************************\n\
         SKIPPING the operator tests: {why}.\n\
         Build the binaries with scripts/k8s-bins.sh, or point HOOKIT_KUBECONFIG at a\n\
         cluster; set HOOKIT_REQUIRE_K8S=1 to make this a failure.\n\
         **********************************************************************\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), banner.as_bytes());
    None
}

fn start() -> Option<Env> {
    if !on_path("kubectl") {
        return skip_or_fail("kubectl is not on PATH".into());
    }
    let env = if let Ok(path) = std::env::var("HOOKIT_KUBECONFIG") {
        Env {
            kubeconfig: path.into(),
            external: true,
        }
    } else {
        let bins = bins_dir();
        let missing: Vec<_> = ["kube-apiserver", "etcd", "helm"]
            .into_iter()
            .filter(|b| !bins.join(b).is_file())
            .collect();
        if !missing.is_empty() {
            return skip_or_fail(format!(
                "{} missing from {}",
                missing.join(", "),
                bins.display()
            ));
        }
        let kubeconfig = launch(&env_dir());
        Env {
            kubeconfig,
            external: false,
        }
    };
    install_crd(&env.kubeconfig);
    Some(env)
}

/// Starts `scripts/kube-env.sh` in `dir`; returns the admin kubeconfig. The
/// watchdog stops etcd and the API server when this process exits, however it
/// exits.
fn launch(dir: &Path) -> PathBuf {
    let bins = bins_dir();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(repo().join("scripts/kube-env.sh"))
        .arg("start")
        .arg(dir)
        .env("KUBE_ENV_WATCH_PID", std::process::id().to_string())
        .env("KUBE_ENV_NO_BUILD", "1")
        .env("K8S_BINS_DIR", &bins)
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/kube-env.sh");
    assert!(
        out.status.success(),
        "scripts/kube-env.sh start failed (logs in {})",
        dir.display()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kubeconfig = stdout
        .lines()
        .find_map(|l| l.strip_prefix("KUBECONFIG="))
        .expect("kube-env.sh printed no KUBECONFIG line")
        .into();
    eprintln!(
        "operator tests: API server ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    kubeconfig
}

/// `<target>/tmp/kube-env-<pid>`: the watchdog stops the processes when the test
/// binary exits, and a later run removes the directories of dead runs. It stops
/// their environment first: a run that starts right after another one would
/// otherwise delete the pid files before that run's watchdog has read them, and
/// the API server would be left running.
fn env_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // kube-env-<pid>
            let Some(pid) = name
                .strip_prefix("kube-env-")
                .and_then(|rest| rest.split('-').next())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let stopped = std::process::Command::new(repo().join("scripts/kube-env.sh"))
                    .arg("stop")
                    .arg(e.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if stopped {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = root.join(format!("kube-env-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the kube-env directory");
    dir
}

/// Installs the committed CRD, as a user would, and waits until it is served.
fn install_crd(kubeconfig: &Path) {
    let crd = repo().join("crds/webhookendpoint.yaml");
    for args in [
        vec![
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crd.to_str().unwrap(),
        ],
        vec![
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/webhookendpoints.hookit.dev",
        ],
    ] {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(&args)
            .output()
            .expect("running kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A client for a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// One test's view of the cluster: an admin client and a fresh namespace.
pub struct Kube {
    /// Admin client.
    pub client: Client,
    /// The test's namespace (= tenant).
    pub ns: String,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    env: &'static Env,
}

/// Output of a kubectl run.
pub struct Kubectl {
    /// Exit status was 0.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Kube {
    /// A fresh namespace named after the test; None when the tests are skipped.
    pub async fn setup(test: &str) -> Option<Kube> {
        let env = env()?;
        let client = client_for(&env.kubeconfig).await;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let base: String = test.replace('_', "-").chars().take(50).collect();
        let ns = format!("{}-{}", base.trim_end_matches('-'), &suffix[..6]);
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(ns.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .expect("creating the test namespace");
        Some(Kube {
            client,
            ns,
            kubeconfig: env.kubeconfig.clone(),
            env,
        })
    }

    /// Whether this is someone's real cluster (then tests clean up after themselves).
    pub fn external(&self) -> bool {
        self.env.external
    }

    /// Runs kubectl with the admin kubeconfig, feeding `stdin`.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Kubectl {
        kubectl_with(&self.kubeconfig, args, stdin).await
    }

    /// An API handle for the test namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// On a real cluster: strip our finalizers (no controller runs any more) and
    /// delete the namespace. The throw-away control plane needs nothing.
    pub async fn cleanup(&self) {
        if !self.external() {
            return;
        }
        for kind in ["webhookendpoints.hookit.dev", "secrets"] {
            let list = self
                .kubectl(&["get", kind, "-n", &self.ns, "-o", "name"], None)
                .await;
            for name in list.stdout.lines() {
                self.kubectl(
                    &[
                        "patch",
                        name,
                        "-n",
                        &self.ns,
                        "--type=merge",
                        "-p",
                        r#"{"metadata":{"finalizers":null}}"#,
                    ],
                    None,
                )
                .await;
            }
        }
        self.kubectl(&["delete", "namespace", &self.ns, "--wait=false"], None)
            .await;
    }
}

/// Runs kubectl with a kubeconfig.
pub async fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Kubectl {
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running kubectl");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl took over 60s")
        .unwrap();
    Kubectl {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// Polls `f` until it yields a value (bounded); panics with `what` and the last
/// observation otherwise.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out after {timeout:?} waiting for {what}; last seen: {last}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A controller running in-process against the test namespace.
pub struct RunningController {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningController {
    /// The controller configuration of a test: only `ns`, a short Lease, fast
    /// status refresh, and loopback targets allowed unless `tweak` says otherwise.
    pub fn config(ns: &str, identity: &str) -> Config {
        let mut cfg = crate::common::test_config();
        cfg.watch_namespace = Some(ns.into());
        cfg.pod_namespace = Some(ns.into());
        cfg.pod_name = Some(identity.into());
        cfg.controller_lease = Duration::from_secs(3);
        cfg.controller_resync = Duration::from_secs(1);
        cfg
    }

    /// The usual controller of a test: [`Self::config`] for `kube`'s namespace,
    /// on `app`'s database.
    pub fn solo(kube: &Kube, app: &crate::common::TestApp) -> Self {
        Self::start(
            Self::config(&kube.ns, "solo"),
            kube.client.clone(),
            app.store.clone(),
        )
    }

    /// Starts `hookit::operator::run_with` with `cfg`.
    pub fn start(cfg: Config, client: Client, store: Store) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                hookit::operator::run_with(&cfg, hookit::operator::Deps { client, store }, stop)
                    .await
            }
        });
        Self { stop, task }
    }

    /// Stops it (gracefully: the Lease is released) and waits (bounded).
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the controller did not stop within 30s")
            .expect("controller task panicked")
            .expect("controller failed");
    }
}

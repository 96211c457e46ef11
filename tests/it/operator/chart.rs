//! The chart as users install it: the `helm install` commands of the README and
//! docs/kubernetes.md are rendered with their own flags, and every container's
//! environment is read by the binary's configuration parser, so documented
//! values that make the binary refuse to start fail here instead of on a
//! cluster. Also: the values schema refuses a non-list `allowPrivateTargets`,
//! and no pod gets Kubernetes' service-link variables.

use std::collections::HashMap;

use hookit::config::Config;

use super::env::{helm, repo};

/// `helm template` of the chart with `args`: the rendered YAML, or helm's stderr.
async fn render(args: &[String]) -> Result<String, String> {
    let helm = helm().expect("helm (scripts/k8s-bins.sh builds one)");
    let out = tokio::process::Command::new(helm)
        .args(["template", "hookit"])
        .arg(repo().join("charts/hookit"))
        .args(args)
        .current_dir(repo())
        .output()
        .await
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn docs(rendered: &str) -> Vec<serde_yaml::Value> {
    rendered
        .split("\n---")
        .filter_map(|d| serde_yaml::from_str::<serde_yaml::Value>(d).ok())
        .filter(|v| v.get("kind").is_some())
        .collect()
}

/// (workload/container, pod spec, container) of every Deployment and Job.
fn containers(docs: &[serde_yaml::Value]) -> Vec<(String, serde_yaml::Value, serde_yaml::Value)> {
    let mut out = Vec::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        if !matches!(kind, "Deployment" | "Job" | "StatefulSet" | "DaemonSet") {
            continue;
        }
        let pod = d["spec"]["template"]["spec"].clone();
        for c in pod["containers"].as_sequence().cloned().unwrap_or_default() {
            let name = format!(
                "{kind} {}/{}",
                d["metadata"]["name"].as_str().unwrap_or_default(),
                c["name"].as_str().unwrap_or_default()
            );
            out.push((name, pod.clone(), c));
        }
    }
    out
}

/// The environment a container would start with: literal values as rendered,
/// Secret and field references filled with valid stand-ins.
fn environment(container: &serde_yaml::Value) -> HashMap<String, String> {
    let mut env = HashMap::new();
    for e in container["env"].as_sequence().cloned().unwrap_or_default() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match e["value"].as_str() {
            Some(v) => v.to_string(),
            None => match name.as_str() {
                "DATABASE_URL" => "postgres://hookit@postgres:5432/hookit".into(),
                "HOOKIT_MASTER_KEY" => hookit::domain::crypto::MasterKey::generate_base64(),
                _ => "from-a-reference".into(),
            },
        };
        env.insert(name, value);
    }
    env
}

/// The flags of every `helm install` command in `file`'s shell blocks.
fn documented_installs(file: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let mut commands = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if !line.trim_start().starts_with("helm install ") {
            continue;
        }
        let mut command = line.to_string();
        while command.ends_with('\\') {
            command.pop();
            command.push(' ');
            command.push_str(lines.next().unwrap_or_default());
        }
        let words = shlex::split(&command).expect("a shell command");
        // helm install <release> <chart> [flags]: keep what shapes the render.
        let mut flags = Vec::new();
        let mut rest = words.into_iter().skip(4);
        while let Some(w) = rest.next() {
            match w.as_str() {
                "--set" | "--set-string" | "-f" | "--values" | "-n" | "--namespace" => {
                    flags.push(w);
                    flags.push(rest.next().expect("a flag's value"));
                }
                _ if w.starts_with("--set") => flags.push(w),
                _ => {}
            }
        }
        commands.push(flags);
    }
    commands
}

#[tokio::test]
async fn the_documented_installs_render_settings_the_binary_accepts() {
    if helm().is_none() {
        eprintln!("SKIPPING the chart test: no helm (scripts/k8s-bins.sh builds one)");
        return;
    }
    let mut checked = 0;
    for file in ["README.md", "docs/kubernetes.md"] {
        let installs = documented_installs(file);
        assert!(!installs.is_empty(), "{file} documents a helm install");
        for flags in installs {
            let rendered = render(&flags)
                .await
                .unwrap_or_else(|e| panic!("{file}: helm template {flags:?}: {e}"));
            for (name, _, c) in containers(&docs(&rendered)) {
                let env = environment(&c);
                if let Err(e) = Config::from_lookup(|k| env.get(k).cloned()) {
                    panic!("{file}: {name} would exit at start: {e}\n(flags {flags:?})");
                }
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 3,
        "migration, controller, worker and api containers: {checked}"
    );
}

#[tokio::test]
async fn allow_private_targets_takes_only_a_list_of_cidrs() {
    if helm().is_none() {
        return;
    }
    let base = |set: &str| {
        vec![
            "--set".to_string(),
            "database.url=postgres://h/db".to_string(),
            "--set".to_string(),
            "masterKey.value=MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=".to_string(),
            "--set".to_string(),
            set.to_string(),
        ]
    };
    for bad in [
        "allowPrivateTargets=true",
        "allowPrivateTargets=false",
        "allowPrivateTargets=10.0.0.0/8",
        "allowPrivateTargets={10.0.0.0}",
    ] {
        let err = render(&base(bad))
            .await
            .expect_err(&format!("{bad} must not render"));
        assert!(
            err.contains("allowPrivateTargets"),
            "{bad}: the message names the value: {err}"
        );
    }
    let rendered = render(&base("allowPrivateTargets={10.0.0.0/8,fd00::/8}"))
        .await
        .unwrap();
    let all = containers(&docs(&rendered));
    for (name, _, c) in &all {
        if name.contains("migrate") {
            continue;
        }
        assert_eq!(
            environment(c)
                .get("HOOKIT_ALLOW_PRIVATE_TARGETS")
                .map(String::as_str),
            Some("10.0.0.0/8,fd00::/8"),
            "{name}"
        );
    }
    // The default, an empty list, leaves the guard whole.
    let rendered = render(&base("logLevel=info")).await.unwrap();
    for (name, _, c) in containers(&docs(&rendered)) {
        assert!(
            !environment(&c).contains_key("HOOKIT_ALLOW_PRIVATE_TARGETS"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn no_pod_gets_service_link_variables() {
    if helm().is_none() {
        return;
    }
    let rendered = render(&["-f".into(), "charts/hookit/ci/full-values.yaml".into()])
        .await
        .unwrap();
    let all = containers(&docs(&rendered));
    assert!(all.len() >= 3, "{}", all.len());
    for (name, pod, _) in all {
        assert_eq!(
            pod["enableServiceLinks"].as_bool(),
            Some(false),
            "{name}: the Service `hookit` would inject HOOKIT_PORT, HOOKIT_SERVICE_HOST, …"
        );
    }
}

#[tokio::test]
async fn tracing_values_render_otel_settings_the_binary_accepts() {
    if helm().is_none() {
        return;
    }
    let with = |sets: &[&str]| {
        let mut args = vec![
            "--set".to_string(),
            "database.url=postgres://h/db".to_string(),
            "--set".to_string(),
            "masterKey.value=MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=".to_string(),
        ];
        for s in sets {
            args.extend(["--set".to_string(), s.to_string()]);
        }
        args
    };
    let rendered = render(&with(&[
        "tracing.endpoint=http://otel-collector.observability:4318",
        "tracing.sampleRatio=0.25",
    ]))
    .await
    .unwrap();
    let mut roles = Vec::new();
    for (name, _, c) in containers(&docs(&rendered)) {
        let env = environment(&c);
        let cfg = Config::from_lookup(|k| env.get(k).cloned())
            .unwrap_or_else(|e| panic!("{name} would exit at start: {e}"));
        let role = c["name"].as_str().unwrap_or_default().to_string();
        match cfg.tracing {
            Some(t) => {
                assert_eq!(
                    t.endpoint, "http://otel-collector.observability:4318/v1/traces",
                    "{name}"
                );
                assert_eq!(t.service_name, format!("hookit-{role}"), "{name}");
                assert_eq!(
                    t.sampler,
                    hookit::config::SamplerChoice::ParentBased(hookit::config::Root::Ratio(0.25)),
                    "{name}"
                );
                roles.push(role);
            }
            // Only the containers that make spans export them.
            None => assert!(!matches!(role.as_str(), "worker" | "api"), "{name}"),
        }
    }
    roles.sort();
    assert_eq!(roles, ["api", "worker"]);
    // Off by default.
    let rendered = render(&with(&[])).await.unwrap();
    for (name, _, c) in containers(&docs(&rendered)) {
        assert!(
            !environment(&c).keys().any(|k| k.starts_with("OTEL_")),
            "{name}"
        );
    }
    // gRPC's port and a ratio outside 0..1 are refused at render time, by name.
    for bad in ["tracing.endpoint=otel:4317", "tracing.sampleRatio=1.5"] {
        let err = render(&with(&[bad])).await.expect_err(bad);
        assert!(err.contains("/tracing/"), "{bad}: {err}");
    }
}

/// The objects of `kinds` in a render, as one YAML stream.
fn only(rendered: &str, kinds: &[&str]) -> String {
    rendered
        .split("\n---")
        .filter(|d| {
            serde_yaml::from_str::<serde_yaml::Value>(d)
                .ok()
                .and_then(|v| v["kind"].as_str().map(|k| kinds.contains(&k)))
                .unwrap_or(false)
        })
        .collect::<Vec<_>>()
        .join("\n---")
}

#[tokio::test]
async fn queue_autoscaling_renders_objects_the_apiserver_accepts() {
    let Some(kube) = super::env::Kube::setup("chart-scale").await else {
        return;
    };
    if helm().is_none() {
        return;
    }
    let crds = super::env::bins_dir().join("../keda-crds");
    assert!(
        crds.join("keda.sh_scaledobjects.yaml").is_file(),
        "KEDA's CRDs (scripts/k8s-bins.sh keda-crds)"
    );
    // Server-side apply: the ScaledObject CRD is too big for the annotation that
    // client-side apply keeps.
    let out = kube
        .kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                crds.to_str().unwrap(),
            ],
            None,
        )
        .await;
    assert!(out.ok, "installing KEDA's CRDs: {}", out.stderr);
    let established = kube
        .kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/scaledobjects.keda.sh",
            ],
            None,
        )
        .await;
    assert!(established.ok, "{}", established.stderr);

    let ns = kube.ns.clone();
    let set = |pairs: &[&str]| {
        let mut args = vec![
            "--namespace".to_string(),
            ns.clone(),
            "--set".into(),
            "database.existingSecret=db".into(),
            "--set".into(),
            "masterKey.existingSecret=key".into(),
        ];
        for p in pairs {
            args.push("--set".into());
            args.push((*p).into());
        }
        args
    };
    for (case, values, kind) in [
        (
            "keda postgresql",
            vec!["worker.keda.enabled=true"],
            "ScaledObject",
        ),
        (
            "keda prometheus",
            vec![
                "worker.keda.enabled=true",
                "worker.keda.trigger=prometheus",
                "worker.keda.prometheus.serverAddress=http://prometheus.monitoring.svc:9090",
            ],
            "ScaledObject",
        ),
        (
            "hpa external metric",
            vec![
                "worker.autoscaling.enabled=true",
                "worker.autoscaling.queueMetric.enabled=true",
            ],
            "HorizontalPodAutoscaler",
        ),
    ] {
        let rendered = render(&set(&values))
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let objects = only(&rendered, &[kind]);
        let parsed = docs(&objects);
        assert_eq!(parsed.len(), 1, "{case}: one {kind}");
        let text = serde_yaml::to_string(&parsed[0]).unwrap();
        assert!(
            text.contains("hookit_queue_work") || text.contains("in_flight"),
            "{case}: scales on the queue:\n{text}"
        );
        // The worker Deployment leaves the count to the autoscaler.
        let deployment = docs(&only(&rendered, &["Deployment"]))
            .into_iter()
            .find(|d| {
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with("-worker")
            })
            .unwrap();
        assert!(
            deployment["spec"]["replicas"].is_null(),
            "{case}: replicas rendered"
        );
        let out = kube
            .kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&objects))
            .await;
        assert!(
            out.ok,
            "{case}: the apiserver refused it: {}\n{objects}",
            out.stderr
        );
    }

    // Both autoscalers at once, or an unknown trigger, do not render.
    let err = render(&set(&[
        "worker.keda.enabled=true",
        "worker.autoscaling.enabled=true",
    ]))
    .await
    .unwrap_err();
    assert!(err.contains("not both"), "{err}");
    let err = render(&set(&[
        "worker.keda.enabled=true",
        "worker.keda.trigger=cpu",
    ]))
    .await
    .unwrap_err();
    assert!(err.contains("postgresql or prometheus"), "{err}");
    kube.cleanup().await;
}

#[tokio::test]
async fn the_documented_kubectl_applies_of_the_examples_succeed_in_order() {
    let Some(kube) = super::env::Kube::setup("chart-examples").await else {
        return;
    };
    // Every `kubectl apply -f examples/…` line, run as written (comments cut),
    // in document order, against a cluster that has only the CRD: a file that
    // needs a namespace a later file creates fails here.
    for file in ["README.md", "docs/kubernetes.md"] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .filter(|l| l.starts_with("kubectl apply -f examples/"))
            .collect();
        assert!(!lines.is_empty(), "{file} applies the examples");
        for line in lines {
            // Paths as written, from the repository root (cargo runs tests elsewhere).
            let words: Vec<String> = shlex::split(line)
                .unwrap()
                .into_iter()
                .skip(1)
                .map(|w| match w.starts_with("examples/") {
                    true => repo().join(&w).display().to_string(),
                    false => w,
                })
                .collect();
            let args: Vec<&str> = words.iter().map(String::as_str).collect();
            let out = kube.kubectl(&args, None).await;
            assert!(out.ok, "{file}: `{line}` failed: {}", out.stderr);
        }
    }
}

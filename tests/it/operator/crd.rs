//! The CRD: the committed YAML is what the code generates, it installs, and the
//! API server enforces its validation before any controller sees a manifest.

use super::env::{repo, Kube};
use super::{apply, manifest};

#[test]
fn committed_crd_files_equal_hookit_crd_output() {
    let generated = hookit::operator::crd_yaml().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookit"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), generated);
    for file in [
        "crds/webhookendpoint.yaml",
        "charts/hookit/crds/webhookendpoint.yaml",
    ] {
        let committed = std::fs::read_to_string(repo().join(file)).unwrap();
        assert!(
            committed == generated,
            "{file} is out of date: regenerate it with `cargo run -q -- crd > {file}`"
        );
    }
}

#[tokio::test]
async fn the_api_server_takes_good_manifests_and_refuses_bad_ones_with_clear_messages() {
    let Some(kube) = Kube::setup("crd-validation").await else {
        return;
    };
    let ns = kube.ns.as_str();

    // The shipped example, moved into this test's namespace.
    let example = std::fs::read_to_string(repo().join("examples/webhookendpoint.yaml")).unwrap();
    let doc = example
        .split("\n---\n")
        .find(|d| d.contains("kind: WebhookEndpoint"))
        .unwrap()
        .replace("namespace: payments", &format!("namespace: {ns}"));
    apply(&kube, &doc).await;
    apply(
        &kube,
        &manifest(ns, "minimal", "  url: https://hooks.example.com/in\n"),
    )
    .await;
    apply(
        &kube,
        &manifest(
            ns,
            "batched",
            "  url: https://hooks.example.com/in\n  ordering: fifo\n  batchSize: 50\n",
        ),
    )
    .await;
    // Short name, printer columns, and the eventTypes default.
    let out = kube.kubectl(&["get", "whe", "-n", ns], None).await;
    assert!(out.ok, "{}", out.stderr);
    let header = out.stdout.lines().next().unwrap_or_default();
    for col in ["NAME", "URL", "READY", "AGE"] {
        assert!(header.contains(col), "no {col} column in: {header}");
    }
    assert!(out.stdout.contains("orders") && out.stdout.contains("minimal"));
    let out = kube
        .kubectl(
            &[
                "get",
                "whe",
                "minimal",
                "-n",
                ns,
                "-o",
                "jsonpath={.spec.eventTypes}",
            ],
            None,
        )
        .await;
    assert_eq!(out.stdout, r#"["*"]"#);

    let cases = [
        (
            "url: ftp://example.com/x",
            "url must be an absolute http:// or https:// URL",
        ),
        (
            "url: not-a-url",
            "url must be an absolute http:// or https:// URL",
        ),
        (
            "url: http:///no-host",
            "url must be an absolute http:// or https:// URL",
        ),
        (
            "url: https://e.example/\n  retry: {maxAttempts: 0}",
            "spec.retry.maxAttempts",
        ),
        (
            "url: https://e.example/\n  retry: {maxAttempts: 101}",
            "should be less than or equal to 100",
        ),
        (
            "url: https://e.example/\n  retry: {initialBackoff: 2h, maxBackoff: 1h}",
            "retry.initialBackoff must not be longer than retry.maxBackoff",
        ),
        (
            "url: https://e.example/\n  retry: {initialBackoff: 48h}",
            "at most 24h",
        ),
        (
            "url: https://e.example/\n  timeout: 10m",
            "timeout must be from 100ms to 300s",
        ),
        (
            "url: https://e.example/\n  timeout: soon",
            "spec.timeout in body should match",
        ),
        (
            "url: https://e.example/\n  headers: {Webhook-Signature: \"forged\"}",
            "headers may not set",
        ),
        (
            "url: https://e.example/\n  headers: {\"bad header\": \"v\"}",
            "header names must be HTTP tokens",
        ),
        (
            "url: https://e.example/\n  eventTypes: []",
            "spec.eventTypes",
        ),
        (
            "url: https://e.example/\n  eventTypes: [\"order..x\"]",
            "spec.eventTypes[0]",
        ),
        ("url: https://e.example/\n  rateLimit: 0", "spec.rateLimit"),
        (
            "url: https://e.example/\n  format: teams",
            "spec.format: Unsupported value: \"teams\"",
        ),
        (
            "url: https://e.example/\n  secretRef: {name: \"Not_A_Name\"}",
            "spec.secretRef.name",
        ),
        (
            "url: https://e.example/\n  batchSize: 10",
            "batchSize above 1 needs ordering: fifo",
        ),
        (
            "url: https://e.example/\n  ordering: fifo\n  batchSize: 10\n  format: slack",
            "batchSize above 1 needs ordering: fifo, the standard format",
        ),
        (
            "url: https://e.example/\n  ordering: fifo\n  batchSize: 101",
            "spec.batchSize",
        ),
        ("description: no url", "spec.url: Required value"),
    ];
    for (i, (spec, expected)) in cases.iter().enumerate() {
        let yaml = manifest(ns, &format!("bad-{i}"), &format!("  {spec}\n"));
        let out = kube.kubectl(&["apply", "-f", "-"], Some(&yaml)).await;
        assert!(
            !out.ok,
            "the API server accepted an invalid manifest:\n{yaml}"
        );
        assert!(
            out.stderr.contains(expected),
            "refusal of\n{yaml}\nlacks {expected:?}: {}",
            out.stderr
        );
    }
    kube.cleanup().await;
}

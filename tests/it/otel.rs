//! OpenTelemetry traces through a real collector: `hookit api` and `hookit
//! worker` processes export OTLP/HTTP to an OpenTelemetry Collector built from
//! its Go modules (`scripts/k8s-bins.sh otelcol`), which forwards OTLP/JSON to a
//! sink here. The spans must arrive with the publisher's trace as their parent,
//! the receiver must get the attempt span as its parent, and nothing secret may
//! ride along.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use serde_json::{json, Value};

use crate::common::{eventually, free_port, Options, Receiver, Reply, TestApp};
use crate::operator::env::bins_dir;

/// Where the collector forwards to: every OTLP/JSON body it posts.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<Value>>>);

impl Sink {
    async fn start(self) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let sink = self.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).expect("OTLP/JSON");
                    sink.0.lock().unwrap().push(v);
                    "{}"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    /// Every span received so far, flattened, with its resource's service.name.
    fn spans(&self) -> Vec<Span> {
        let mut out = Vec::new();
        for body in self.0.lock().unwrap().iter() {
            for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                let service = attrs(&rs["resource"]["attributes"])
                    .remove("service.name")
                    .unwrap_or_default();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for s in ss["spans"].as_array().into_iter().flatten() {
                        out.push(Span {
                            service: service.clone(),
                            name: s["name"].as_str().unwrap_or_default().into(),
                            trace_id: s["traceId"].as_str().unwrap_or_default().into(),
                            span_id: s["spanId"].as_str().unwrap_or_default().into(),
                            parent: s["parentSpanId"].as_str().unwrap_or_default().into(),
                            kind: s["kind"].as_i64().unwrap_or_default(),
                            error: s["status"]["code"].as_i64() == Some(2),
                            attrs: attrs(&s["attributes"]),
                            links: s["links"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|l| l["spanId"].as_str().map(str::to_string))
                                .collect(),
                            raw: s.to_string(),
                        });
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    kind: i64,
    error: bool,
    attrs: HashMap<String, String>,
    /// The span ids it links to.
    links: Vec<String>,
    raw: String,
}

/// OTLP/JSON attributes as strings (int64 values are strings in OTLP/JSON).
fn attrs(list: &Value) -> HashMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let v = &a["value"];
            let s = v["stringValue"]
                .as_str()
                .map(str::to_string)
                .or_else(|| v["intValue"].as_str().map(str::to_string))
                .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
                .or_else(|| v["boolValue"].as_bool().map(|b| b.to_string()))?;
            Some((a["key"].as_str()?.to_string(), s))
        })
        .collect()
}

/// The collector, or None (a skip) when it is not built; HOOKIT_REQUIRE_K8S=1
/// (CI) makes a missing binary a failure, as for the other Go-built tools.
fn collector_binary() -> Option<std::path::PathBuf> {
    let bin = bins_dir().join("otelcol");
    if bin.is_file() {
        return Some(bin);
    }
    let why = format!(
        "{} is not built (scripts/k8s-bins.sh otelcol)",
        bin.display()
    );
    if std::env::var("HOOKIT_REQUIRE_K8S").as_deref() == Ok("1") {
        panic!("HOOKIT_REQUIRE_K8S=1 but {why}");
    }
    eprintln!("SKIPPING the OpenTelemetry test: {why}");
    None
}

async fn wait_listening(port: u16, what: &str) {
    eventually(what, Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test]
async fn spans_reach_a_real_collector_as_children_of_the_publishers_trace() {
    let Some(otelcol) = collector_binary() else {
        return;
    };
    let sink = Sink::default();
    let sink_port = sink.clone().start().await;
    let otlp_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("otelcol.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{otlp_port}\n\
             exporters:\n  otlp_http:\n    endpoint: http://127.0.0.1:{sink_port}\n    encoding: json\n    compression: none\n\
             service:\n  telemetry:\n    metrics:\n      level: none\n    logs:\n      level: warn\n\
             \x20 pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp_http]\n"
        ),
    )
    .unwrap();
    let _collector = tokio::process::Command::new(&otelcol)
        .arg("--config")
        .arg(format!("file:{}", config.display()))
        .kill_on_drop(true)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the collector");
    wait_listening(otlp_port, "the collector's OTLP/HTTP port").await;

    // Endpoints and the key through the in-process app; the spans come from
    // real `hookit api` and `hookit worker` processes on the same database.
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let rx = Receiver::start().await;
    rx.set_path_reply("/fail", Reply::Status(500));
    let ok_ep = app
        .endpoint(json!({"url": format!("{}?token=sekrit-query", rx.url("/ok")), "event_types": ["order.paid"]}))
        .await;
    let fail_ep = app
        .endpoint(json!({"url": rx.url("/fail"), "event_types": ["order.paid"], "max_attempts": 1}))
        .await;
    let api_port = free_port();
    let spawn = |role: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hookit"))
            .arg(role)
            .env("DATABASE_URL", app.cfg.database_url.as_ref().unwrap())
            .env("HOOKIT_MASTER_KEY", app.cfg_master_key_b64())
            .env("HOOKIT_ALLOW_PRIVATE_TARGETS", "127.0.0.0/8")
            .env("HOOKIT_LISTEN", format!("127.0.0.1:{api_port}"))
            .env(
                "HOOKIT_METRICS_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("HOOKIT_LOG_FORMAT", "text")
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{otlp_port}"),
            )
            .env("OTEL_SERVICE_NAME", format!("hookit-{role}"))
            // Export every 100 ms rather than every 5 s: the test waits for it.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .kill_on_drop(true)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut api = spawn("api");
    let mut worker = spawn("worker");
    wait_listening(api_port, "hookit api").await;

    let http = reqwest::Client::new();
    let publish = |traceparent: Option<String>, marker: &'static str| {
        let http = http.clone();
        let key = app.key.clone();
        async move {
            let mut req = http
                .post(format!("http://127.0.0.1:{api_port}/v1/events"))
                .bearer_auth(key);
            if let Some(tp) = traceparent {
                req = req.header("traceparent", tp);
            }
            let r = req
                .json(&json!({"event_type": "order.paid", "payload": {"marker": marker}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let event = publish(Some(format!("00-{trace}-{parent}-01")), "PAYLOAD-MARKER-1").await;
    // A publisher that did not sample its trace: HookIt follows (parent-based).
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    publish(
        Some(format!("00-{unsampled}-b7ad6b7169203331-00")),
        "PAYLOAD-MARKER-2",
    )
    .await;
    // No traceparent: ingestion starts the trace, and the attempts join it.
    let orphan = publish(None, "PAYLOAD-MARKER-3").await;

    let got = rx.wait_for(6, Duration::from_secs(30)).await;
    let tp_of = |path: &str, t: &str| -> Vec<String> {
        got.iter()
            .filter(|r| r.path == path && r.header("traceparent").contains(t))
            .map(|r| r.header("traceparent"))
            .collect()
    };
    // The receiver's parent is HookIt's attempt span, in the publisher's trace.
    let ok_tp = tp_of("/ok", trace);
    assert_eq!(ok_tp.len(), 1, "{got:?}");
    let parts: Vec<&str> = ok_tp[0].split('-').collect();
    assert_eq!((parts[1], parts[3]), (trace, "01"));
    assert_ne!(
        parts[2], parent,
        "the receiver's parent is the attempt, not the publisher"
    );
    let ok_attempt_id = parts[2].to_string();
    let unsampled_tp = tp_of("/ok", unsampled);
    assert_eq!(unsampled_tp.len(), 1);
    assert!(unsampled_tp[0].ends_with("-00"), "{}", unsampled_tp[0]);

    let spans_of_trace = |t: &str| -> Vec<Span> {
        sink.spans()
            .into_iter()
            .filter(|s| s.trace_id == t)
            .collect()
    };
    eventually(
        "the trace's spans at the sink",
        Duration::from_secs(30),
        || {
            let n = spans_of_trace(trace).len();
            async move { n >= 3 }
        },
    )
    .await;
    eventually(
        "claim and completion spans",
        Duration::from_secs(30),
        || {
            let spans = sink.spans();
            let claims = spans.iter().any(|s| {
                s.name == "claim" && s.attrs.get("hookit.claim.got").is_some_and(|g| g != "0")
            });
            let completes = spans.iter().any(|s| s.name == "complete");
            async move { claims && completes }
        },
    )
    .await;
    let spans = spans_of_trace(trace);
    let ingest: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "POST /v1/events")
        .collect();
    assert_eq!(ingest.len(), 1, "{spans:#?}");
    let ingest = ingest[0];
    assert_eq!(ingest.parent, parent);
    assert_eq!(ingest.kind, 2, "SERVER");
    assert_eq!(ingest.service, "hookit-api");
    assert_eq!(ingest.attrs["http.response.status_code"], "202");
    assert_eq!(ingest.attrs["http.route"], "/v1/events");
    assert_eq!(ingest.attrs["hookit.event.id"], event);

    let attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "POST").collect();
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for a in &attempts {
        assert_eq!(
            a.parent, parent,
            "an attempt is a child of the publisher's span"
        );
        assert_eq!(a.kind, 3, "CLIENT");
        assert_eq!(a.service, "hookit-worker");
        assert_eq!(a.attrs["http.request.method"], "POST");
        assert_eq!(a.attrs["hookit.event.id"], event);
        assert_eq!(a.attrs["hookit.attempt"], "1");
        assert_eq!(a.attrs["server.address"], "127.0.0.1");
    }
    let ok = attempts
        .iter()
        .find(|a| a.attrs["hookit.endpoint.id"] == ok_ep)
        .unwrap();
    assert_eq!(
        ok.span_id, ok_attempt_id,
        "the receiver saw this span as its parent"
    );
    assert_eq!(ok.attrs["http.response.status_code"], "200");
    assert!(!ok.error);
    assert_eq!(ok.attrs["url.full"], rx.url("/ok"), "no query in the span");
    let failed = attempts
        .iter()
        .find(|a| a.attrs["hookit.endpoint.id"] == fail_ep)
        .unwrap();
    assert_eq!(failed.attrs["http.response.status_code"], "500");
    assert_eq!(failed.attrs["error.type"], "500");
    assert!(failed.error, "a 500 marks the attempt failed");

    // The batch spans are linked with the attempts they served: an attempt
    // to the claim that leased its delivery, a completion to the attempts
    // whose outcomes it wrote.
    let claims: Vec<String> = sink
        .spans()
        .into_iter()
        .filter(|s| s.name == "claim")
        .map(|s| s.span_id)
        .collect();
    for a in &attempts {
        assert!(
            a.links.iter().any(|l| claims.contains(l)),
            "an attempt links to its claim: {a:#?}"
        );
    }
    let completion = eventually_span(&sink, |s| {
        s.name == "complete" && s.links.contains(&ok.span_id)
    })
    .await;
    assert_eq!(completion.service, "hookit-worker");

    let orphan_ingest = eventually_span(&sink, |s| {
        s.name == "POST /v1/events" && s.attrs.get("hookit.event.id") == Some(&orphan)
    })
    .await;
    assert_eq!(
        orphan_ingest.parent, "",
        "a root: the publisher sent no trace"
    );
    let orphan_attempts: Vec<Span> = eventually_spans(&sink, 2, |s| {
        s.name == "POST" && s.attrs.get("hookit.event.id") == Some(&orphan)
    })
    .await;
    for a in &orphan_attempts {
        assert_eq!(a.trace_id, orphan_ingest.trace_id);
        assert_eq!(
            a.parent, orphan_ingest.span_id,
            "attempts hang under ingestion"
        );
    }

    // Nothing of the unsampled trace was exported, and nothing secret anywhere.
    assert!(spans_of_trace(unsampled).is_empty());
    for s in sink.spans() {
        for secret in ["PAYLOAD-MARKER", "sekrit", "whsec_", &app.key] {
            assert!(!s.raw.contains(secret), "{secret} in {}", s.raw);
        }
    }
    api.kill().await.unwrap();
    worker.kill().await.unwrap();
    app.stop().await;
}

/// The first span matching `pred`, waiting (bounded) for it to arrive.
async fn eventually_span(sink: &Sink, pred: impl Fn(&Span) -> bool) -> Span {
    eventually_spans(sink, 1, pred).await.remove(0)
}

/// At least `n` spans matching `pred`, waiting (bounded) for them to arrive.
async fn eventually_spans(sink: &Sink, n: usize, pred: impl Fn(&Span) -> bool) -> Vec<Span> {
    let found = || {
        sink.spans()
            .into_iter()
            .filter(|s| pred(s))
            .collect::<Vec<_>>()
    };
    eventually("spans at the sink", Duration::from_secs(30), || {
        let k = found().len();
        async move { k >= n }
    })
    .await;
    found()
}

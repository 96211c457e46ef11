//! Receivers that misbehave below HTTP.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::raw::*;
use crate::common::{eventually, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_receivers_cost_one_bounded_attempt_each() {
    const TIMEOUT_MS: i64 = 1500;
    let app = TestApp::spawn().await;
    let cases = [
        (Misbehaviour::EndlessBody(200), "succeeded"),
        (Misbehaviour::EndlessBody(500), "dead"),
        (Misbehaviour::EndlessHeaders, "dead"),
        (Misbehaviour::DripAll, "dead"),
        (Misbehaviour::DripBody, "succeeded"),
        (Misbehaviour::Garbage, "dead"),
        (Misbehaviour::CloseAtOnce, "dead"),
    ];
    let mut setups = Vec::new();
    for (i, (mode, expected)) in cases.into_iter().enumerate() {
        let (url, stats) = raw_receiver(mode).await;
        let ep = app
            .endpoint(
                json!({"url": url, "event_types": [format!("raw.m{i}")], "timeout_ms": TIMEOUT_MS,
                             "max_attempts": 2, "retry_base_ms": 50, "retry_cap_ms": 100}),
            )
            .await;
        app.publish(&format!("raw.m{i}"), json!({"mode": format!("{mode:?}")}))
            .await;
        setups.push((mode, expected, ep, stats));
    }
    for (mode, expected, ep, stats) in &setups {
        let done = app
            .wait_deliveries(&format!("endpoint_id={ep}"), Duration::from_secs(30), |d| {
                d.len() == 1 && (d[0]["status"] == "succeeded" || d[0]["status"] == "dead")
            })
            .await;
        assert_eq!(done[0]["status"], *expected, "{mode:?}: {}", done[0]);
        let (_, detail) = app
            .get(&format!(
                "/v1/deliveries/{}",
                done[0]["id"].as_str().unwrap()
            ))
            .await;
        let log = detail["attempt_log"].as_array().unwrap();
        assert_eq!(
            log.len(),
            if *expected == "dead" { 2 } else { 1 },
            "{mode:?}: {detail}"
        );
        for a in log {
            let ms = a["duration_ms"].as_i64().unwrap();
            assert!(
                ms <= TIMEOUT_MS + 1500,
                "{mode:?}: an attempt took {ms} ms, past its {TIMEOUT_MS} ms timeout"
            );
            let excerpt = a["response_body"].as_str().unwrap_or("").len();
            assert!(excerpt <= 4096, "{mode:?}: stored a {excerpt}-byte excerpt");
        }
        if let Misbehaviour::EndlessBody(_) = mode {
            assert_eq!(
                log[0]["response_body"].as_str().unwrap().len(),
                4096,
                "{mode:?}: the excerpt is the first 4 KiB"
            );
        }
        if let Misbehaviour::EndlessBody(_) | Misbehaviour::EndlessHeaders = mode {
            // The worker read a bounded amount and hung up; it did not keep reading.
            eventually(
                "the worker hangs up on an endless response",
                Duration::from_secs(10),
                || async { stats.open() == 0 },
            )
            .await;
            assert_eq!(
                stats.stalled.load(Ordering::SeqCst),
                0,
                "{mode:?}: the worker neither read nor closed"
            );
            let sent = stats.max_bytes_sent.load(Ordering::SeqCst);
            assert!(
                sent < 32 << 20,
                "{mode:?}: the receiver got {sent} bytes out before the worker hung up"
            );
        }
        eprintln!(
            "{mode:?}: {} after {} attempt(s), last error {:?}, {} connection(s), max {} bytes written",
            done[0]["status"],
            log.len(),
            done[0]["last_error"],
            stats.connections.load(Ordering::SeqCst),
            stats.max_bytes_sent.load(Ordering::SeqCst)
        );
    }
    app.stop().await;
}

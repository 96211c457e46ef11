//! The `fleet` scenario: real traffic goes to thousands of hosts that answer in
//! tens to hundreds of milliseconds, not to a few fast ones. 1,000 endpoints,
//! each on its own loopback address (127.1.x.y), so the worker keeps a
//! connection pool per host as it would in production; receivers answer after
//! 50–500 ms (spread evenly by endpoint), 1 % answer 500 and one never answers.
//!
//! Publishers offer a fixed rate (an open loop: lateness is only meaningful
//! when the offered load does not wait for the system). What is measured over
//! the window, after a warm-up: healthy deliveries per second, their lateness
//! (arrival at the receiver minus the event's timestamp, which is when it was
//! due), connections the receivers accepted per delivery, and the workers' RSS.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use chrono::Utc;
use serde_json::json;

use super::report::Row;
use super::scenarios::{costs, percentiles, probe, Ctx};
use super::Deployment;

/// Endpoints in the fleet (HookIt's default per-tenant limit).
const ENDPOINTS: usize = 1000;
/// Endpoints per event type: each event fans out to this many.
const FAN_OUT: usize = 10;
/// Deliveries per second offered.
const OFFERED: f64 = 3000.0;
/// The one endpoint that never answers.
const HANGING: usize = 0;

/// How endpoint `i` answers.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Healthy(Duration),
    Failing,
    Hanging,
}

fn behaviour(i: usize) -> Behaviour {
    if i == HANGING {
        Behaviour::Hanging
    } else if i % 100 == 50 {
        Behaviour::Failing
    } else {
        Behaviour::Healthy(Duration::from_millis(
            50 + (i as u64 * 450) / (ENDPOINTS as u64 - 1),
        ))
    }
}

/// 127.1.x.y for endpoint `i`: distinct hosts, all on loopback.
fn address(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8)
}

#[derive(Default)]
struct FleetTally {
    connections: AtomicU64,
    healthy: AtomicU64,
    requests: AtomicU64,
    seen: Mutex<HashSet<(String, usize)>>,
    lateness_ms: Mutex<Vec<f64>>,
}

impl FleetTally {
    fn reset_window(&self) -> (u64, u64) {
        self.lateness_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        (
            self.connections.load(Ordering::Relaxed),
            self.healthy.load(Ordering::Relaxed),
        )
    }
}

/// Starts one listener per endpoint address on the same port; returns the port.
async fn start_receivers(
    tally: Arc<FleetTally>,
) -> anyhow::Result<(u16, Vec<tokio::task::JoinHandle<()>>)> {
    let first = tokio::net::TcpListener::bind((address(0), 0)).await?;
    let port = first.local_addr()?.port();
    let mut listeners = vec![first];
    for i in 1..ENDPOINTS {
        listeners.push(tokio::net::TcpListener::bind((address(i), port)).await?);
    }
    let app = Router::new()
        .route("/ep/{i}", post(handle))
        .with_state(tally.clone());
    let mut tasks = Vec::new();
    for l in listeners {
        let (app, tally) = (app.clone(), tally.clone());
        let l = l.tap_io(move |_| {
            tally.connections.fetch_add(1, Ordering::Relaxed);
        });
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        }));
    }
    Ok((port, tasks))
}

async fn handle(
    State(t): State<Arc<FleetTally>>,
    Path(i): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    t.requests.fetch_add(1, Ordering::Relaxed);
    match behaviour(i) {
        Behaviour::Hanging => {
            std::future::pending::<()>().await;
            StatusCode::OK
        }
        Behaviour::Failing => StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::Healthy(latency) => {
            // Lateness is taken on arrival: the answer's own latency is the receiver's.
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let fresh = t
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((id, i));
            if fresh {
                if let Some(at) = super::receiver::envelope_time(&body) {
                    let ms = (Utc::now() - at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                    t.lateness_ms
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(ms);
                }
            }
            tokio::time::sleep(latency).await;
            if fresh {
                t.healthy.fetch_add(1, Ordering::Relaxed);
            }
            StatusCode::NO_CONTENT
        }
    }
}

async fn create_endpoints(d: &Deployment, port: u16) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for i in 0..ENDPOINTS {
        let mut body = json!({
            "url": format!("http://{}:{port}/ep/{i}", address(i)),
            "event_types": [format!("fleet.g{}", i / FAN_OUT)],
        });
        if behaviour(i) == Behaviour::Hanging {
            body["timeout_ms"] = json!(5000);
        }
        let r = http
            .post(format!("{}/v1/endpoints", d.base))
            .bearer_auth(&d.key)
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            return Err(anyhow!(
                "creating fleet endpoint {i} failed: {}",
                r.text().await.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// Offers `OFFERED / FAN_OUT` events/s, rotating through the groups, until
/// `until`: an open loop, so a slow answer does not lower the offered rate. At
/// most `MAX_PUBLISHING` requests are outstanding; an offer beyond that is
/// counted as not accepted. Returns (offered, accepted).
async fn publish(base: &str, key: &str, until: Instant) -> (u64, u64) {
    const MAX_PUBLISHING: usize = 256;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_PUBLISHING)
        .build()
        .unwrap_or_default();
    let events_per_s = OFFERED / FAN_OUT as f64;
    let groups = ENDPOINTS / FAN_OUT;
    let accepted = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PUBLISHING));
    let url = format!("{base}/v1/events");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / events_per_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut offered = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < until {
        tick.tick().await;
        let n = offered as usize;
        offered += 1;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (http, accepted, url, key) =
            (http.clone(), accepted.clone(), url.clone(), key.to_string());
        tasks.spawn(async move {
            let body = json!({"event_type": format!("fleet.g{}", n % groups), "payload": {"n": n, "amount": 1999}});
            if matches!(http.post(&url).bearer_auth(&key).json(&body).send().await, Ok(r) if r.status().is_success()) {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    (offered, accepted.load(Ordering::Relaxed))
}

/// The fleet with `workers` processes of `concurrency` slots each.
async fn case(ctx: &Ctx<'_>, workers: usize, concurrency: usize) -> anyhow::Result<Row> {
    let tally = Arc::new(FleetTally::default());
    let (port, receivers) = start_receivers(tally.clone()).await?;
    let url = ctx.server.database("hookit_bench").await?;
    let conc = concurrency.to_string();
    let d = Deployment::start(
        &url,
        workers,
        &[("HOOKIT_WORKER_CONCURRENCY", conc.as_str())],
    )
    .await?;
    create_endpoints(&d, port).await?;
    let (api, wk) = d.pids();
    let all: Vec<u32> = api.iter().chain(wk.iter()).copied().collect();
    let warmup = Duration::from_secs(3);
    let end = Instant::now() + warmup + ctx.args.duration;
    let publishing = tokio::spawn({
        let (base, key) = (d.base.clone(), d.key.clone());
        async move { publish(&base, &key, end).await }
    });
    tokio::time::sleep(warmup).await;
    let (conns0, healthy0) = tally.reset_window();
    let a = probe(&d.store, &all).await?;
    tokio::time::sleep_until(end.into()).await;
    let b = probe(&d.store, &all).await?;
    let healthy = tally.healthy.load(Ordering::Relaxed) - healthy0;
    let conns = tally.connections.load(Ordering::Relaxed) - conns0;
    let lateness =
        std::mem::take(&mut *tally.lateness_ms.lock().unwrap_or_else(|p| p.into_inner()));
    let (offered, accepted) = publishing.await.unwrap_or((0, 0));
    let secs = (b.at - a.at).as_secs_f64();
    let total = (warmup + ctx.args.duration).as_secs_f64();
    let mut row = Row {
        scenario: "fleet".into(),
        case: format!("1,000 endpoints, 50-500 ms; {workers} worker(s) x {concurrency} slots"),
        rate: healthy as f64 / secs,
        unit: "healthy deliveries/s".into(),
        note: format!(
            "events offered {:.0}/s, accepted {:.0}/s (x{FAN_OUT} deliveries); {:.4} connections per delivery; p50/p99 = lateness",
            offered as f64 / total,
            accepted as f64 / total,
            conns as f64 / healthy.max(1) as f64,
        ),
        ..Default::default()
    };
    percentiles(&mut row, lateness);
    costs(&mut row, &a, &b, healthy as f64, &all);
    // Worker memory only: the API process is not what a fleet of hosts loads.
    row.peak_rss_mib = wk
        .iter()
        .filter_map(|p| super::procstat::peak_rss_mib(*p))
        .reduce(f64::max);
    d.stop().await;
    for r in receivers {
        r.abort();
    }
    ctx.server.drop_database("hookit_bench").await;
    Ok(row)
}

pub(crate) async fn fleet(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (workers, concurrency) in [(1, 256), (1, 1024), (2, 1024)] {
        rows.push(case(ctx, workers, concurrency).await?);
    }
    Ok(rows)
}

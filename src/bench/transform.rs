//! The `transform` scenario: what a transformation costs. The same closed-loop
//! delivery case twice on one run, without and with a 10-line handler that
//! reshapes the payload, so the CPU per delivery and the throughput compare
//! like for like; and the engine's own cost of a cold compile and a warm call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::report::Row;
use super::scenarios::{deliver_case, Ctx};
use crate::domain::transform::input_json;
use crate::transform::{Limits, Transformer};

/// The handler measured: 10 lines that reshape the payload, as a ticketing or
/// chat API would want it. It keeps the envelope's timestamp, which the
/// benchmark's receiver reads for the latency.
pub const HANDLER: &str = r#"function handler(webhook) {
  const e = webhook.payload, d = e.data;
  webhook.payload = {
    title: `${webhook.eventType} from publisher ${d.publisher}`,
    amount: { value: d.amount / 100, currency: d.currency },
    fields: Object.keys(d).map((k) => ({ name: k, value: String(d[k]) })),
    timestamp: e.timestamp,
  };
  webhook.headers["x-source"] = "hookit";
  return webhook;
}"#;

pub(crate) async fn transform(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let workers = 1;
    let n_ep = 10;
    let mut plain = deliver_case(ctx, n_ep, workers, json!({})).await?;
    plain.scenario = "transform".into();
    plain.case = format!("{n_ep} endpoints, no transformation");
    let mut with = deliver_case(ctx, n_ep, workers, json!({"transformation": HANDLER})).await?;
    with.scenario = "transform".into();
    with.case = format!("{n_ep} endpoints, 10-line handler");
    if let (Some(a), Some(b)) = (plain.hookit_cpu_s_per_1k, with.hookit_cpu_s_per_1k) {
        // CPU s per 1,000 deliveries → µs per delivery.
        with.note = format!(
            "{:+.1} µs HookIt CPU per delivery, {:.0} % of the throughput without; {}",
            (b - a) * 1000.0,
            100.0 * with.rate / plain.rate.max(f64::MIN_POSITIVE),
            with.note
        );
    }
    let mut rows = vec![plain, with];
    rows.extend(engine_rows().await?);
    Ok(rows)
}

/// The engine alone, in this process: a cold compile (a fresh runtime plus the
/// handler, as after a code change) and a warm call (JSON in, handler, JSON out,
/// the result checked), each through the engine thread as the worker calls it.
async fn engine_rows() -> anyhow::Result<Vec<Row>> {
    let t = Transformer::start(2, Limits::default())?;
    let payload =
        json!({"id": "evt_1", "type": "bench.event", "timestamp": "2026-12-07T17:00:00.000Z",
        "data": {"publisher": 3, "n": 17, "amount": 1999, "currency": "EUR"}})
        .to_string();
    let input = input_json(
        "bench.event",
        &payload,
        "http://127.0.0.1:9/ep0",
        &Default::default(),
    );
    let key = uuid::Uuid::new_v4();
    let cold = median(200, || async {
        let started = Instant::now();
        t.try_once(key, HANDLER, input.clone()).await.map(|_| ())?;
        Ok(started.elapsed())
    })
    .await?;
    let code: Arc<str> = Arc::from(HANDLER);
    t.run(key, code.clone(), input.clone()).await?;
    let warm = median(2_000, || async {
        let started = Instant::now();
        t.run(key, code.clone(), input.clone()).await.map(|_| ())?;
        Ok(started.elapsed())
    })
    .await?;
    let row = |case: &str, d: Duration, n: usize| Row {
        scenario: "transform".into(),
        case: case.into(),
        rate: 1.0 / d.as_secs_f64(),
        unit: "calls/s".into(),
        note: format!(
            "median {:.1} µs of {n}, engine thread hop included",
            d.as_secs_f64() * 1e6
        ),
        ..Default::default()
    };
    Ok(vec![
        row("engine: cold compile + call", cold, 200),
        row("engine: warm call", warm, 2_000),
    ])
}

async fn median<F, Fut>(n: usize, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Duration, crate::domain::transform::TransformError>>,
{
    let mut xs = Vec::with_capacity(n);
    for _ in 0..n {
        xs.push(f().await?);
    }
    xs.sort();
    Ok(xs[n / 2])
}

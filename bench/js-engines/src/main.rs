//! QuickJS (rquickjs) against Boa on HookIt's transformation shapes: the cost of a
//! cold compile (a fresh engine plus the handler's source) and of a warm call
//! (JSON in, `handler(webhook)`, JSON out), the way the worker would run them.
//! It also checks which sandbox limits each engine can enforce.

use std::time::{Duration, Instant};

/// The handler shapes: the bench's 10-line reshape, a chat-style summary, and a
/// header/URL override.
const SHAPES: &[(&str, &str)] = &[
    (
        "reshape (10 lines)",
        r#"function handler(webhook) {
  const d = webhook.payload.data;
  webhook.payload = {
    ticket: { title: `${webhook.eventType}: ${d.symbol}`, priority: d.change > 5 ? "high" : "low" },
    fields: Object.keys(d).map((k) => ({ name: k, value: String(d[k]) })),
    source: "hookit",
  };
  webhook.headers["x-source"] = "hookit";
  return webhook;
}"#,
    ),
    (
        "summary text",
        r#"function handler(webhook) {
  const d = webhook.payload.data;
  let lines = [];
  for (const [k, v] of Object.entries(d)) lines.push(`**${k}**: ${JSON.stringify(v)}`);
  webhook.payload = { content: `${webhook.eventType}\n` + lines.join("\n") };
  return webhook;
}"#,
    ),
    (
        "url + method override",
        r#"function handler(webhook) {
  webhook.url = webhook.url + "/" + webhook.payload.data.symbol.toLowerCase();
  webhook.method = "PUT";
  return webhook;
}"#,
    ),
];

fn input() -> String {
    serde_json::json!({
        "eventType": "price.updated",
        "payload": {
            "id": "evt_2Zf0c8", "type": "price.updated", "timestamp": "2026-12-07T17:00:00Z",
            "data": {"symbol": "BTC", "price": 97123.45, "change": 6.2, "currency": "USD",
                     "source": "coinbase", "at": "2026-12-07T17:00:00Z"}
        },
        "url": "https://receiver.example/hooks",
        "method": "POST",
        "headers": {}
    })
    .to_string()
}

trait Engine {
    fn name(&self) -> &'static str;
    /// A fresh engine with the handler compiled.
    fn compile(&mut self, src: &str);
    /// One call: the webhook as JSON in, the result as JSON out.
    fn call(&mut self, input: &str) -> String;
}

/// Field order is drop order: the handler and context before their runtime.
struct Quick {
    handler: Option<rquickjs::Persistent<rquickjs::Function<'static>>>,
    ctx: Option<rquickjs::Context>,
    rt: Option<rquickjs::Runtime>,
}

impl Engine for Quick {
    fn name(&self) -> &'static str {
        "QuickJS (rquickjs 0.14)"
    }
    fn compile(&mut self, src: &str) {
        self.handler = None;
        self.ctx = None;
        let rt = rquickjs::Runtime::new().unwrap();
        rt.set_memory_limit(16 << 20);
        let ctx = rquickjs::Context::full(&rt).unwrap();
        let handler = ctx.with(|ctx| {
            ctx.eval::<(), _>(src).unwrap();
            let f: rquickjs::Function = ctx.globals().get("handler").unwrap();
            rquickjs::Persistent::save(&ctx, f)
        });
        self.rt = Some(rt);
        self.ctx = Some(ctx);
        self.handler = Some(handler);
    }
    fn call(&mut self, input: &str) -> String {
        let handler = self.handler.clone().unwrap();
        self.ctx.as_ref().unwrap().with(|ctx| {
            let f = handler.restore(&ctx).unwrap();
            let v = ctx.json_parse(input).unwrap();
            let out: rquickjs::Value = f.call((v,)).unwrap();
            ctx.json_stringify(out)
                .unwrap()
                .unwrap()
                .to_string()
                .unwrap()
        })
    }
}

struct Boa {
    ctx: Option<boa_engine::Context>,
    handler: Option<boa_engine::JsObject>,
}

impl Engine for Boa {
    fn name(&self) -> &'static str {
        "Boa (boa_engine 0.22)"
    }
    fn compile(&mut self, src: &str) {
        let mut ctx = boa_engine::Context::default();
        ctx.eval(boa_engine::Source::from_bytes(src)).unwrap();
        let f = ctx
            .global_object()
            .get(boa_engine::js_string!("handler"), &mut ctx)
            .unwrap();
        self.handler = Some(f.as_callable().unwrap().clone());
        self.ctx = Some(ctx);
    }
    fn call(&mut self, input: &str) -> String {
        let ctx = self.ctx.as_mut().unwrap();
        let json: serde_json::Value = serde_json::from_str(input).unwrap();
        let v = boa_engine::JsValue::from_json(&json, ctx).unwrap();
        let out = self
            .handler
            .as_ref()
            .unwrap()
            .call(&boa_engine::JsValue::undefined(), &[v], ctx)
            .unwrap();
        out.to_json(ctx).unwrap().unwrap().to_string()
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() {
    let input = input();
    let engines: Vec<Box<dyn Engine>> = vec![
        Box::new(Quick {
            handler: None,
            ctx: None,
            rt: None,
        }),
        Box::new(Boa {
            ctx: None,
            handler: None,
        }),
    ];
    println!("| engine | handler | cold compile (median of 50) | warm call (median of 5 x 2,000) | output bytes |");
    println!("|---|---|---|---|---|");
    for mut e in engines {
        for (shape, src) in SHAPES {
            let cold = median(
                (0..50)
                    .map(|_| {
                        let t = Instant::now();
                        e.compile(src);
                        t.elapsed()
                    })
                    .collect(),
            );
            e.compile(src);
            let out = e.call(&input);
            for _ in 0..200 {
                e.call(&input);
            }
            let warm = median(
                (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        for _ in 0..2_000 {
                            std::hint::black_box(e.call(&input));
                        }
                        t.elapsed() / 2_000
                    })
                    .collect(),
            );
            println!(
                "| {} | {shape} | {:.1} µs | {:.1} µs | {} |",
                e.name(),
                cold.as_secs_f64() * 1e6,
                warm.as_secs_f64() * 1e6,
                out.len()
            );
        }
    }
    // The heap of one compiled handler (what the worker's cache keeps per entry).
    let mut q = Quick {
        handler: None,
        ctx: None,
        rt: None,
    };
    q.compile(SHAPES[0].1);
    q.call(&input);
    let usage = q.rt.as_ref().unwrap().memory_usage();
    println!(
        "\nQuickJS: one compiled reshape handler after a call: {} KiB allocated in {} blocks",
        usage.malloc_size / 1024,
        usage.malloc_count
    );
    // Sandbox limits each engine can enforce on an untrusted handler.
    let rt = rquickjs::Runtime::new().unwrap();
    rt.set_memory_limit(8 << 20);
    let deadline = Instant::now() + Duration::from_millis(50);
    rt.set_interrupt_handler(Some(Box::new(move || Instant::now() > deadline)));
    let ctx = rquickjs::Context::full(&rt).unwrap();
    let t = Instant::now();
    let looped = ctx.with(|ctx| ctx.eval::<(), _>("for(;;){}").is_err());
    println!(
        "\nQuickJS: infinite loop interrupted = {looped} after {:?}",
        t.elapsed()
    );
    rt.set_interrupt_handler(None);
    let bombed = ctx.with(|ctx| {
        ctx.eval::<(), _>("let a = []; for (;;) a.push('x'.repeat(1000));")
            .is_err()
    });
    println!("QuickJS: memory bomb stopped at 8 MiB = {bombed}");
    println!("Boa: RuntimeLimits offers loop-iteration, recursion and stack limits only: no memory cap, no time interrupt");
}

//! One compiled transformation: its own QuickJS runtime (heap, memory cap,
//! interrupt handler) and context holding the user's `handler`.
//!
//! Why a runtime per transformation and not one per thread: the memory cap is
//! per runtime, so a handler that hoards memory in its globals only ever hurts
//! itself, and tenants never share a heap. A runtime with a compiled handler
//! holds about 110 KiB and a compile takes well under a millisecond
//! (docs/transformations.md), so compiled handlers are cached by the pool and
//! this cost is paid once per code version.
//!
//! The sandbox is the engine's bare core: no `std`/`os` modules, no module
//! loader, no timers, no I/O of any kind. What remains is the language.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::context::EvalOptions;
use rquickjs::{Context, Ctx, Function, Persistent, Runtime, Value};

use crate::domain::transform::TransformError;

/// The name stack traces give the user's code, so that line numbers can be found.
const FILE: &str = "transformation.js";
/// Native stack for the handler's recursion. The pool's threads have 4 MiB, so a
/// deep recursion is a JavaScript `InternalError`, never a crash.
const MAX_STACK: usize = 512 * 1024;

/// What one call may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall time of one call on its engine thread (the interrupt handler checks it).
    pub time: Duration,
    /// Heap of one transformation's runtime, in bytes.
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_millis(50),
            memory: 16 << 20,
        }
    }
}

/// A compiled handler. Field order is drop order: the function and context hold
/// references into the runtime, so they go first.
pub(super) struct Compiled {
    handler: Persistent<Function<'static>>,
    ctx: Context,
    rt: Runtime,
    deadline: Rc<Cell<Option<Instant>>>,
    interrupted: Rc<Cell<bool>>,
    limits: Limits,
}

impl Compiled {
    /// Compiles `src` and finds its `handler`. Top-level code runs here, under the
    /// same limits as a call (a top-level `for(;;){}` is stopped too).
    pub(super) fn new(src: &str, limits: Limits) -> Result<Self, TransformError> {
        let rt = Runtime::new().map_err(|_| TransformError::Unavailable)?;
        rt.set_memory_limit(limits.memory);
        rt.set_max_stack_size(MAX_STACK);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
        let interrupted = Rc::new(Cell::new(false));
        {
            let (deadline, interrupted) = (deadline.clone(), interrupted.clone());
            // Called by the interpreter every few thousand instructions; returning
            // true raises an uncatchable exception, so `try {} catch {}` around
            // an endless loop does not keep it alive.
            rt.set_interrupt_handler(Some(Box::new(move || {
                let over = deadline.get().is_some_and(|d| Instant::now() >= d);
                if over {
                    interrupted.set(true);
                }
                over
            })));
        }
        let ctx = Context::full(&rt).map_err(|_| TransformError::Unavailable)?;
        interrupted.set(false);
        deadline.set(Some(Instant::now() + limits.time));
        let handler = ctx.with(|ctx| {
            let mut opts = EvalOptions::default();
            // Svix handlers are written as sloppy-mode scripts.
            opts.strict = false;
            opts.filename = Some(FILE.to_string());
            ctx.eval_with_options::<(), _>(src, opts)
                .map_err(|e| describe(&ctx, e, &interrupted, limits, true))?;
            let f: Value = ctx
                .globals()
                .get("handler")
                .map_err(|e| describe(&ctx, e, &interrupted, limits, true))?;
            let f = f.into_function().ok_or_else(|| {
                TransformError::Compile("the code must define `function handler(webhook)`".into())
            })?;
            Ok(Persistent::save(&ctx, f))
        });
        deadline.set(None);
        Ok(Compiled {
            handler: handler?,
            ctx,
            rt,
            deadline,
            interrupted,
            limits,
        })
    }

    /// Calls the handler with `input` (JSON text) and returns `JSON.stringify` of
    /// what it returned (`None` for `undefined`).
    pub(super) fn call(&self, input: &str) -> Result<Option<String>, TransformError> {
        self.interrupted.set(false);
        self.deadline.set(Some(Instant::now() + self.limits.time));
        let out = self.ctx.with(|ctx| {
            let run = || -> rquickjs::Result<Option<String>> {
                let f = self.handler.clone().restore(&ctx)?;
                let webhook = ctx.json_parse(input)?;
                let returned: Value = f.call((webhook,))?;
                match ctx.json_stringify(returned)? {
                    Some(s) => Ok(Some(s.to_string()?)),
                    None => Ok(None),
                }
            };
            run().map_err(|e| describe(&ctx, e, &self.interrupted, self.limits, false))
        });
        self.deadline.set(None);
        out
    }

    /// Whether this runtime should be thrown away rather than reused: after a
    /// stopped call its heap may hold whatever the handler was building.
    pub(super) fn spent(&self, e: &TransformError) -> bool {
        matches!(
            e,
            TransformError::Timeout { .. } | TransformError::OutOfMemory { .. }
        )
    }

    /// Frees cycles left by the last call once the heap passes half its cap.
    /// (QuickJS frees most garbage by reference counting as it goes.)
    pub(super) fn tidy(&self) {
        if self.rt.memory_usage().malloc_size as usize > self.limits.memory / 2 {
            self.rt.run_gc();
        }
    }
}

/// Turns an engine error into the user's error: the exception's name, message
/// and line in their code, or the limit that stopped it.
fn describe(
    ctx: &Ctx<'_>,
    e: rquickjs::Error,
    interrupted: &Cell<bool>,
    limits: Limits,
    compiling: bool,
) -> TransformError {
    if interrupted.get() {
        // Clear the pending (uncatchable) exception so the context is usable.
        let _ = ctx.catch();
        return TransformError::Timeout {
            budget_ms: limits.time.as_millis() as u64,
        };
    }
    let text = match e {
        rquickjs::Error::Exception => {
            let caught = ctx.catch();
            exception_text(&caught)
        }
        other => other.to_string(),
    };
    if text.contains("out of memory") {
        return TransformError::OutOfMemory { cap: limits.memory };
    }
    if compiling {
        TransformError::Compile(text)
    } else {
        TransformError::Threw(text)
    }
}

/// `TypeError: x is undefined at line 3`: the message and the first line of the
/// user's file in the stack. Only the engine's words and positions: a thrown
/// value is shown by its message, never serialized (it may carry the payload).
fn exception_text(v: &Value<'_>) -> String {
    if let Some(ex) = v.as_exception() {
        let message = ex.message().unwrap_or_default();
        let name: String = ex
            .get::<_, Option<String>>("name")
            .ok()
            .flatten()
            .unwrap_or_else(|| "Error".into());
        let line = ex.stack().as_deref().and_then(line_in_file);
        let mut text = format!("{name}: {message}");
        if let Some(line) = line {
            text.push_str(&format!(" at line {line}"));
        }
        text.truncate(500);
        return text;
    }
    match v.type_of() {
        rquickjs::Type::String => "threw a string".into(),
        t => format!("threw a {} (throw an Error to say why)", t.as_str()),
    }
}

/// The line of the first stack frame in the user's file.
fn line_in_file(stack: &str) -> Option<u32> {
    let at = stack.find(FILE)? + FILE.len();
    let rest = stack[at..].strip_prefix(':')?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            time: Duration::from_millis(50),
            memory: 8 << 20,
        }
    }

    const INPUT: &str = r#"{"eventType":"order.paid","method":"POST","url":"https://r.example/","headers":{},"payload":{"data":{"n":2}}}"#;

    #[test]
    fn a_handler_reshapes_the_webhook() {
        let c = Compiled::new(
            "function handler(w) {\n  w.payload = { n: w.payload.data.n * 21, t: w.eventType };\n  return w;\n}",
            limits(),
        )
        .unwrap();
        let out = c.call(INPUT).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["payload"]["n"], 42);
        assert_eq!(v["payload"]["t"], "order.paid");
        // Reused: the same compiled handler serves the next call.
        assert!(c.call(INPUT).unwrap().is_some());
    }

    #[test]
    fn a_throw_names_its_line() {
        let c = Compiled::new(
            "function handler(w) {\n  const d = w.payload.data;\n  return d.missing.deeper;\n}",
            limits(),
        )
        .unwrap();
        match c.call(INPUT) {
            Err(TransformError::Threw(m)) => {
                assert!(m.starts_with("TypeError: "), "{m}");
                assert!(m.ends_with("at line 3"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_errors_and_a_missing_handler_do_not_compile() {
        match Compiled::new("function handler(w) {\n  return w +;\n}", limits()) {
            Err(TransformError::Compile(m)) => assert!(m.contains("SyntaxError"), "{m}"),
            other => panic!("{:?}", other.err()),
        }
        match Compiled::new("function other(w) { return w }", limits()) {
            Err(TransformError::Compile(m)) => assert!(m.contains("handler"), "{m}"),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn an_endless_loop_is_stopped_even_inside_try() {
        let c = Compiled::new(
            "function handler(w) { try { for (;;) {} } catch (e) { return w } }",
            limits(),
        )
        .unwrap();
        let t = Instant::now();
        assert_eq!(
            c.call(INPUT),
            Err(TransformError::Timeout { budget_ms: 50 })
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // Top-level code is bounded as well.
        assert!(matches!(
            Compiled::new("for (;;) {}", limits()),
            Err(TransformError::Timeout { .. })
        ));
    }

    #[test]
    fn a_memory_bomb_is_stopped_at_the_cap() {
        let c = Compiled::new(
            "function handler(w) { const a = []; for (;;) a.push('x'.repeat(4096) + a.length); }",
            limits(),
        )
        .unwrap();
        assert_eq!(
            c.call(INPUT),
            Err(TransformError::OutOfMemory { cap: 8 << 20 })
        );
    }

    #[test]
    fn there_is_no_io_timer_or_module_loading() {
        let probe =
            "function handler(w) { w.payload = [typeof require, typeof fetch, typeof setTimeout, \
                     typeof XMLHttpRequest, typeof std, typeof os, typeof process]; return w; }";
        let c = Compiled::new(probe, limits()).unwrap();
        let out = c.call(INPUT).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(
            v["payload"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t == "undefined"),
            "{v}"
        );
        match Compiled::new(
            "import x from 'os'; function handler(w) { return w }",
            limits(),
        ) {
            Err(TransformError::Compile(m)) => assert!(m.contains("SyntaxError"), "{m}"),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn deep_recursion_is_an_error_not_a_crash() {
        // On a thread like the pool's (engine state never crosses threads).
        let handle = std::thread::Builder::new()
            .stack_size(4 << 20)
            .spawn(|| {
                let src =
                    "function f(n) { return f(n + 1) + 1 } function handler(w) { return f(0) }";
                Compiled::new(src, limits()).unwrap().call(INPUT)
            })
            .unwrap();
        match handle.join().unwrap() {
            Err(TransformError::Threw(m)) => assert!(
                m.starts_with("RangeError: Maximum call stack size exceeded"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }
}

//! How far a download has come, told to the person waiting: a progress bar
//! when stderr is a terminal, otherwise a log line every few seconds (a log
//! collector gets a handful of lines, not a redraw per chunk).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::info;

/// How often the log form reports.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A running report of bytes received.
pub(super) enum Progress {
    Bar(ProgressBar),
    Log {
        started: Instant,
        last: Instant,
        done: u64,
        total: Option<u64>,
    },
}

impl Progress {
    /// Starts reporting a download of `total` bytes (if the server said).
    pub(super) fn start(total: Option<u64>) -> Self {
        let now = Instant::now();
        if !std::io::stderr().is_terminal() {
            return Self::Log {
                started: now,
                last: now,
                done: 0,
                total,
            };
        }
        let bar = match total {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "PostgreSQL {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
                    )
                    .expect("a valid template"),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("PostgreSQL {spinner} {binary_bytes} {binary_bytes_per_sec}")
                    .expect("a valid template"),
            ),
        };
        Self::Bar(bar)
    }

    /// Counts `n` more bytes.
    pub(super) fn advance(&mut self, n: u64) {
        match self {
            Self::Bar(bar) => bar.inc(n),
            Self::Log {
                started,
                last,
                done,
                total,
            } => {
                *done += n;
                if last.elapsed() >= LOG_EVERY {
                    *last = Instant::now();
                    report(*started, *done, *total, "downloading PostgreSQL");
                }
            }
        }
    }

    /// Ends the report with the final count.
    pub(super) fn finish(self) {
        match self {
            Self::Bar(bar) => bar.finish_and_clear(),
            Self::Log {
                started,
                done,
                total,
                ..
            } => report(started, done, total, "PostgreSQL downloaded"),
        }
    }
}

fn report(started: Instant, done: u64, total: Option<u64>, message: &str) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let rate = format!("{}/s", HumanBytes((done as f64 / secs) as u64));
    let total = total
        .map(|t| HumanBytes(t).to_string())
        .unwrap_or_else(|| "?".into());
    info!(
        received = %HumanBytes(done),
        total = %total,
        rate = %rate,
        "{message}"
    );
}

//! The engine threads: a few OS threads that run transformations off the async
//! runtime, each with its own cache of compiled handlers.
//!
//! Why threads of our own: a handler is CPU work that may run up to its whole
//! budget, and on a tokio worker that would stall every other delivery's I/O.
//!
//! Why the queue is per key: jobs are queued by a *fairness key* (the endpoint,
//! or the tenant for the API's checks), and a key is run by at most one thread
//! at a time, round-robin between keys. One endpoint whose handler loops for its
//! whole budget on every event therefore holds at most one thread, and every
//! other endpoint keeps the rest: "nothing else slows down" holds with two
//! threads or more.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::engine::{Compiled, Limits};
use crate::domain::transform::TransformError;

/// Compiled handlers kept per thread (least recently used go first).
const CACHE_PER_THREAD: usize = 128;

/// What the caller gets back: `JSON.stringify` of the handler's return value.
pub(super) type Reply = Result<Option<String>, TransformError>;

pub(super) struct Job {
    /// Content hash of the code: the cache key, so an edit is a new entry and
    /// nothing is ever invalidated.
    pub sha: [u8; 32],
    pub code: Arc<str>,
    /// The webhook as JSON; `None` only compiles (validation on write).
    pub input: Option<String>,
    /// Compile afresh and do not keep it (the API's one-off runs).
    pub uncached: bool,
    pub reply: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Queue {
    /// Keys with work and no thread on them, in turn order.
    ready: VecDeque<Uuid>,
    /// Every key with queued work or a thread on it. A key is present while a
    /// thread runs one of its jobs, even with nothing left queued: that is what
    /// keeps a second thread off it.
    jobs: HashMap<Uuid, VecDeque<Job>>,
    closed: bool,
}

pub(super) struct Pool {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Pool {
    /// Starts `threads` engine threads.
    pub(super) fn start(threads: usize, limits: Limits) -> std::io::Result<Arc<Self>> {
        let pool = Arc::new(Pool {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        });
        for i in 0..threads.max(1) {
            let p = pool.clone();
            std::thread::Builder::new()
                .name(format!("hookit-js-{i}"))
                // Room for the engine's own 512 KiB JavaScript stack limit.
                .stack_size(4 << 20)
                .spawn(move || p.run(limits))?;
        }
        Ok(pool)
    }

    /// Queues `job` behind the other jobs of `key`.
    pub(super) fn submit(&self, key: Uuid, job: Job) -> Result<(), Job> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.closed {
            return Err(job);
        }
        match q.jobs.get_mut(&key) {
            Some(waiting) => waiting.push_back(job),
            None => {
                q.jobs.insert(key, VecDeque::from([job]));
                q.ready.push_back(key);
                self.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Stops the threads once the queued jobs are done.
    pub(super) fn close(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.wake.notify_all();
    }

    fn run(&self, limits: Limits) {
        let mut cache = Cache::default();
        loop {
            let (key, job) = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(key) = q.ready.pop_front() {
                        let job = q
                            .jobs
                            .get_mut(&key)
                            .and_then(|w| w.pop_front())
                            .expect("a ready key has a queued job");
                        break (key, job);
                    }
                    if q.closed {
                        return;
                    }
                    q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            let started = Instant::now();
            let reply = cache.run(&job, limits);
            metrics::histogram!("hookit_transformation_seconds")
                .record(started.elapsed().as_secs_f64());
            // The caller may have given up (shutdown); nothing to do then.
            let _ = job.reply.send(reply);
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.jobs.get(&key).is_some_and(|w| w.is_empty()) {
                q.jobs.remove(&key);
            } else {
                // More of this key: its turn comes again after the others'.
                q.ready.push_back(key);
                self.wake.notify_one();
            }
        }
    }
}

/// One thread's compiled handlers.
#[derive(Default)]
struct Cache {
    entries: HashMap<[u8; 32], (Compiled, u64)>,
    clock: u64,
}

impl Cache {
    fn run(&mut self, job: &Job, limits: Limits) -> Reply {
        if job.uncached {
            let compiled = Compiled::new(&job.code, limits)?;
            return match &job.input {
                Some(input) => compiled.call(input),
                None => Ok(None),
            };
        }
        self.clock += 1;
        if !self.entries.contains_key(&job.sha) {
            if self.entries.len() >= CACHE_PER_THREAD {
                self.evict_oldest();
            }
            let compiled = Compiled::new(&job.code, limits)?;
            self.entries.insert(job.sha, (compiled, self.clock));
        }
        let (compiled, used) = self.entries.get_mut(&job.sha).expect("just inserted");
        *used = self.clock;
        let Some(input) = &job.input else {
            return Ok(None);
        };
        let out = compiled.call(input);
        match &out {
            Err(e) if compiled.spent(e) => {
                // A fresh runtime for the next call: this one was stopped midway.
                self.entries.remove(&job.sha);
            }
            _ => compiled.tidy(),
        }
        out
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(k, _)| *k)
        {
            self.entries.remove(&oldest);
        }
    }
}

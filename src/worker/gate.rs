//! Per-endpoint admission inside one worker: an in-flight cap and an optional rate
//! limit, so one slow or hanging receiver cannot take every slot of the process.
//!
//! A claimed delivery whose endpoint is at its cap waits here, in memory, for a
//! slot (briefly: see [`MAX_WAIT`]) instead of going back to the queue, which would
//! cost two writes. Once an endpoint has no free slot, the claim loop stops taking
//! its rows (see [`Gates::saturated`]), so at most one claim batch ever waits.
//!
//! **Pacing by the receiver.** When a response says the endpoint's bucket is
//! empty (`X-RateLimit-Remaining: 0` with `Reset-After`/`Reset`, or a 429's
//! retry-after), [`Gates::pace`] holds the endpoint until it refills: a
//! delivery that gets its slot then waits out the pause holding the slot (when
//! short, see [`MAX_WAIT`]) or goes back to the queue due at its end, and the
//! claim loop leaves the endpoint's rows alone meanwhile. With one request in
//! flight (the default of chat formats), each response paces the next request,
//! so a steady feed meets the receiver's limit instead of its 429s. Pacing is
//! per worker process: several workers each keep their own, and a 429 one of
//! them still meets is deferred without spending an attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Longest a claimed delivery waits for its endpoint's slot before it is handed
/// back to the queue (a hanging receiver must not pin claimed rows for long).
pub const MAX_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct State {
    slots: Arc<Semaphore>,
    cap: usize,
    waiting: Arc<AtomicUsize>,
    window_start: Instant,
    in_window: u32,
    /// Until when the receiver asked for no more requests.
    paced_until: Option<tokio::time::Instant>,
}

/// Admission decisions for all endpoints this worker sends to.
#[derive(Clone, Debug)]
pub struct Gates {
    default_cap: usize,
    inner: Arc<Mutex<HashMap<Uuid, State>>>,
}

/// Whether a delivery may go now.
#[derive(Debug)]
pub enum Admission {
    /// Go; the slot is held until dropped.
    Go(Slot),
    /// Not now; try again at this time (no attempt is spent).
    Later(DateTime<Utc>),
}

/// An in-flight slot of one endpoint; freed on drop.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Gates {
    /// Gates with a default in-flight cap per endpoint.
    pub fn new(default_cap: usize) -> Self {
        Self {
            default_cap,
            inner: Arc::default(),
        }
    }

    /// Admits one delivery to `endpoint`, honouring its cap and rate limit; waits
    /// up to [`MAX_WAIT`] for a slot.
    pub async fn admit(
        &self,
        endpoint: Uuid,
        cap: Option<i32>,
        rate_per_sec: Option<i32>,
    ) -> Admission {
        let (slots, waiting) = {
            let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let cap = cap.map(|c| c.max(1) as usize).unwrap_or(self.default_cap);
            let s = m.entry(endpoint).or_insert_with(|| State {
                slots: Arc::new(Semaphore::new(cap)),
                cap,
                waiting: Arc::default(),
                window_start: Instant::now(),
                in_window: 0,
                paced_until: None,
            });
            if s.cap != cap {
                // The endpoint's cap changed: adjust the permits (the running ones
                // drain naturally).
                if cap > s.cap {
                    s.slots.add_permits(cap - s.cap);
                } else {
                    s.slots.forget_permits(s.cap - cap);
                }
                s.cap = cap;
            }
            if let Some(rate) = rate_per_sec {
                let elapsed = s.window_start.elapsed();
                if elapsed >= Duration::from_secs(1) {
                    s.window_start = Instant::now();
                    s.in_window = 0;
                } else if s.in_window >= rate.max(1) as u32 {
                    let wait = Duration::from_secs(1) - elapsed;
                    return Admission::Later(
                        Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                    );
                }
                s.in_window += 1;
            }
            (s.slots.clone(), s.waiting.clone())
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(p) => Slot { _permit: p },
            Err(_) => {
                waiting.fetch_add(1, Ordering::Relaxed);
                let got = tokio::time::timeout(MAX_WAIT, slots.acquire_owned()).await;
                waiting.fetch_sub(1, Ordering::Relaxed);
                match got {
                    Ok(Ok(p)) => Slot { _permit: p },
                    _ => return Admission::Later(Utc::now() + chrono::Duration::seconds(1)),
                }
            }
        };
        // Checked with the slot held: the request that held it before may just
        // have paced the endpoint.
        loop {
            let until = self.paced_until(endpoint);
            let now = tokio::time::Instant::now();
            match until {
                Some(u) if u > now => {
                    let wait = u - now;
                    if wait > MAX_WAIT {
                        return Admission::Later(
                            Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                        );
                    }
                    tokio::time::sleep_until(u).await;
                }
                _ => return Admission::Go(slot),
            }
        }
    }

    /// Holds `endpoint`'s next requests for `wait` (the receiver's rate limit):
    /// extends, never shortens, a pause already set.
    pub fn pace(&self, endpoint: Uuid, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = m.get_mut(&endpoint) {
            s.paced_until = Some(s.paced_until.map_or(until, |u| u.max(until)));
        }
    }

    fn paced_until(&self, endpoint: Uuid) -> Option<tokio::time::Instant> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&endpoint).and_then(|s| s.paced_until)
    }

    /// Endpoints with no free slot, or paced by their receiver: the next claim
    /// skips their rows.
    pub fn saturated(&self) -> Vec<Uuid> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        m.iter()
            .filter(|(_, s)| {
                s.slots.available_permits() == 0 || s.paced_until.is_some_and(|u| u > now)
            })
            .map(|(k, _)| *k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cap_waits_then_gives_back_and_rate_limits() {
        let g = Gates::new(2);
        let ep = Uuid::new_v4();
        let a = g.admit(ep, None, None).await;
        let b = g.admit(ep, None, None).await;
        assert!(matches!(a, Admission::Go(_)) && matches!(b, Admission::Go(_)));
        assert_eq!(g.saturated(), vec![ep]);
        // A third waits for a slot and gets it when one frees.
        let g2 = g.clone();
        let third = tokio::spawn(async move { g2.admit(ep, None, None).await });
        tokio::task::yield_now().await;
        drop(a);
        let third = third.await.unwrap();
        assert!(matches!(third, Admission::Go(_)));
        // With every slot held, the wait is bounded and ends in "later".
        tokio::time::pause();
        let later = g.admit(ep, None, None).await;
        assert!(matches!(later, Admission::Later(_)));
        tokio::time::resume();
        drop((b, third));
        let other = Uuid::new_v4();
        let mut slots = Vec::new();
        for _ in 0..3 {
            slots.push(g.admit(other, Some(10), Some(3)).await);
        }
        assert!(slots.iter().all(|s| matches!(s, Admission::Go(_))));
        assert!(matches!(
            g.admit(other, Some(10), Some(3)).await,
            Admission::Later(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_endpoint_waits_out_short_pauses_and_defers_long_ones() {
        let g = Gates::new(4);
        let ep = Uuid::new_v4();
        drop(g.admit(ep, Some(1), None).await);
        g.pace(ep, Duration::from_millis(1500));
        assert_eq!(g.saturated(), vec![ep], "the claim skips a paced endpoint");
        let t0 = tokio::time::Instant::now();
        let a = g.admit(ep, Some(1), None).await;
        assert!(matches!(a, Admission::Go(_)));
        assert!(
            t0.elapsed() >= Duration::from_millis(1500),
            "waited out the pause"
        );
        assert!(g.saturated().contains(&ep), "its one slot is held");
        drop(a);
        assert!(g.saturated().is_empty());
        // A pause is only ever extended.
        g.pace(ep, Duration::from_secs(30));
        g.pace(ep, Duration::from_secs(1));
        let before = Utc::now();
        match g.admit(ep, Some(1), None).await {
            Admission::Later(at) => assert!(at >= before + chrono::Duration::seconds(29)),
            Admission::Go(_) => panic!("a long pause goes back to the queue"),
        }
        // Other endpoints are not held.
        assert!(matches!(
            g.admit(Uuid::new_v4(), None, None).await,
            Admission::Go(_)
        ));
    }
}

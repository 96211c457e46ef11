//! Per-endpoint admission inside one worker: an in-flight cap and an optional rate
//! limit, so one slow or hanging receiver cannot take every slot of the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug)]
struct State {
    in_flight: usize,
    cap: usize,
    window_start: Instant,
    in_window: u32,
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
    inner: Arc<Mutex<HashMap<Uuid, State>>>,
    endpoint: Uuid,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.inner.lock() {
            if let Some(s) = m.get_mut(&self.endpoint) {
                s.in_flight = s.in_flight.saturating_sub(1);
                if s.in_flight == 0 && s.window_start.elapsed() > Duration::from_secs(60) {
                    m.remove(&self.endpoint);
                }
            }
        }
    }
}

impl Gates {
    /// Gates with a default in-flight cap per endpoint.
    pub fn new(default_cap: usize) -> Self {
        Self {
            default_cap,
            inner: Arc::default(),
        }
    }

    /// Admits one delivery to `endpoint`, honouring its cap and rate limit.
    pub fn admit(&self, endpoint: Uuid, cap: Option<i32>, rate_per_sec: Option<i32>) -> Admission {
        let mut m = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let cap = cap.map(|c| c.max(1) as usize).unwrap_or(self.default_cap);
        let s = m.entry(endpoint).or_insert_with(|| State {
            in_flight: 0,
            cap,
            window_start: Instant::now(),
            in_window: 0,
        });
        s.cap = cap;
        if s.in_flight >= cap {
            return Admission::Later(Utc::now() + chrono::Duration::milliseconds(250));
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
        s.in_flight += 1;
        Admission::Go(Slot {
            inner: self.inner.clone(),
            endpoint,
        })
    }

    /// Endpoints at their in-flight cap: the next claim skips their rows.
    pub fn saturated(&self) -> Vec<Uuid> {
        match self.inner.lock() {
            Ok(m) => m
                .iter()
                .filter(|(_, s)| s.in_flight >= s.cap)
                .map(|(k, _)| *k)
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_and_rate_limit() {
        let g = Gates::new(2);
        let ep = Uuid::new_v4();
        let a = g.admit(ep, None, None);
        let b = g.admit(ep, None, None);
        assert!(matches!(a, Admission::Go(_)) && matches!(b, Admission::Go(_)));
        assert!(matches!(g.admit(ep, None, None), Admission::Later(_)));
        assert_eq!(g.saturated(), vec![ep]);
        drop(a);
        assert!(g.saturated().is_empty());
        let other = Uuid::new_v4();
        let slots: Vec<_> = (0..3).map(|_| g.admit(other, Some(10), Some(3))).collect();
        assert!(slots.iter().all(|s| matches!(s, Admission::Go(_))));
        assert!(matches!(
            g.admit(other, Some(10), Some(3)),
            Admission::Later(_)
        ));
    }
}

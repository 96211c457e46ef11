//! The leases this worker holds, so that none runs out while the delivery is
//! still ours.
//!
//! A claimed delivery is leased for `HOOKIT_LEASE`. Most are done in milliseconds,
//! but a slow receiver, or a wait in memory for the endpoint's slot, can hold one
//! longer; if its lease ran out, the lease rescue would hand it to another claim
//! and the receiver would get it twice with no crash at all. So every delivery is
//! tracked here from its claim until its outcome is written (or it is given back),
//! and the renewal loop extends, in one statement, the leases that are past half
//! their term. Only a worker that is gone (or cut off from the database for a
//! whole lease) loses its leases.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The deliveries a worker holds, with when each lease runs out (by our clock,
/// measured from before the claim was sent, so never later than the database's).
#[derive(Debug, Default)]
pub struct Held {
    leases: Mutex<HashMap<Uuid, Instant>>,
}

impl Held {
    /// Records deliveries claimed at `claimed_at` for `lease`.
    pub fn track(&self, ids: impl IntoIterator<Item = Uuid>, claimed_at: Instant, lease: Duration) {
        let until = claimed_at + lease;
        let mut m = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        m.extend(ids.into_iter().map(|id| (id, until)));
    }

    /// Forgets deliveries that are no longer ours to renew: written, given back or
    /// buried (or lost to a rescue).
    pub fn forget(&self, ids: impl IntoIterator<Item = Uuid>) {
        let mut m = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            m.remove(&id);
        }
    }

    /// Deliveries whose lease runs out within half a `lease` of `now`.
    pub fn due_for_renewal(&self, now: Instant, lease: Duration) -> Vec<Uuid> {
        let m = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .filter(|(_, until)| until.saturating_duration_since(now) < lease / 2)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Records a renewal sent at `sent_at`: `renewed` run for another `lease`;
    /// those of `asked` missing from it were no longer ours.
    pub fn renewed(
        &self,
        asked: &[Uuid],
        renewed: &[Uuid],
        sent_at: Instant,
        lease: Duration,
    ) -> usize {
        let mut m = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        for id in renewed {
            if let Some(until) = m.get_mut(id) {
                *until = sent_at + lease;
            }
        }
        let kept: std::collections::HashSet<&Uuid> = renewed.iter().collect();
        let mut lost = 0;
        for id in asked.iter().filter(|id| !kept.contains(id)) {
            if m.remove(id).is_some() {
                lost += 1;
            }
        }
        lost
    }

    /// How many deliveries are held.
    pub fn len(&self) -> usize {
        self.leases.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_leases_past_half_their_term_are_renewed() {
        let held = Held::default();
        let lease = Duration::from_secs(60);
        let t0 = Instant::now();
        let (old, new, done) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        held.track([old, done], t0, lease);
        held.track([new], t0 + Duration::from_secs(40), lease);
        held.forget([done]);
        let at = t0 + Duration::from_secs(31);
        assert_eq!(held.due_for_renewal(at, lease), vec![old]);
        // `old` renewed at 31 s: not due again until past half of its new term.
        assert_eq!(held.renewed(&[old], &[old], at, lease), 0);
        assert!(held
            .due_for_renewal(t0 + Duration::from_secs(60), lease)
            .is_empty());
        assert_eq!(
            held.due_for_renewal(t0 + Duration::from_secs(62), lease),
            vec![old]
        );
        // A renewal that comes back without a row: it was rescued, we let go.
        assert_eq!(
            held.renewed(&[new], &[], t0 + Duration::from_secs(80), lease),
            1
        );
        assert_eq!(held.len(), 1);
    }
}

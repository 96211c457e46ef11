//! Pure logic with no I/O: ids, retry policy, the delivery state machine, signing,
//! body formats for chat destinations, rate-limit hints, event-type schemas,
//! secret encryption and the SSRF policy. Everything here is unit-tested without a
//! database or a network.

pub mod crypto;
pub mod event_schema;
pub mod formats;
pub mod ids;
pub mod page;
pub mod patterns;
pub mod ratelimit;
pub mod retry;
pub mod signing;
pub mod ssrf;
pub mod state;
pub mod transform;

//! Faults injected for real: the database stopped or killed under load, a worker
//! process SIGKILLed over and over, a hanging receiver next to healthy ones, an
//! endpoint failing until its circuit opens, receivers that misbehave at the TCP
//! level, retention, and request limits.

mod circuit;
mod crash;
mod lease;
mod limits;
mod noisy;
mod outage;
mod raw;
mod retention;
mod tcp;

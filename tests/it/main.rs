//! Integration tests: real PostgreSQL, real HTTP, real processes.

mod api;
mod batch;
mod chat;
mod cli;
mod common;
mod delivery;
mod demo_live;
mod event_types;
mod fifo;
mod idempotency;
mod operator;
mod otel;
mod resilience;
mod ssrf;
mod transform;
mod workers;

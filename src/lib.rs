//! HookIt: webhook delivery with an at-least-once guarantee, on a PostgreSQL queue.
//!
//! Where things are:
//! - the delivery state machine: [`domain::state`]
//! - the claim query: [`db::deliveries`] (`Store::claim`)
//! - the worker loop: [`worker`]
//! - the HTTP API: [`api`]
//! - the roles (`standalone`, `api`, `worker`, …): [`roles`]
//! - `hookit keys` (create, list, revoke): [`keys`]

pub mod api;
pub mod bench;
pub mod config;
pub mod db;
pub mod demo;
pub mod domain;
pub mod embedded_pg;
pub mod error;
pub mod keys;
pub mod operator;
pub mod roles;
pub mod telemetry;
pub mod transform;
pub mod worker;

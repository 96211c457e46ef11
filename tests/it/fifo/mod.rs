//! Ordered (FIFO) endpoints: the claim hands out only an endpoint's head, one at
//! a time, to any number of concurrent claimers; batches of a FIFO endpoint's
//! queue in one request; and the proof from issue #12, with worker processes,
//! failing receivers and a worker killed midway.
//!
//! - `api`: the `ordering` and `batch_size` settings over REST;
//! - `claim`: concurrent claimers, and a dead head releasing the queue;
//! - `batching`: what a batching endpoint's receiver gets, and retries of a batch;
//! - `proof`: the proof (worker processes, failures, a SIGKILL), and the
//!   throughput figures of docs/fifo.md;
//! - `claim_cost`: what FIFO endpoints cost the claim of ordinary rows (by hand).

mod api;
mod batching;
mod claim;
mod claim_cost;
mod proof;
mod recorder;

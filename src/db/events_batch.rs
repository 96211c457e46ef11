//! Batch ingestion: many events of one tenant in one group-commit statement, each
//! with its own idempotency key and its own outcome.
//!
//! The rows of one batch go to the batcher as one request, which it never splits
//! across statements (see `db::batcher`): they commit together with whatever other
//! requests share the statement, or the whole request fails (and the API answers
//! 503), so an item reported `accepted` is committed and no batch is half-written.
//! Nothing an item can carry fails the statement: items are validated before they
//! are queued, and a repeated key is an `ON CONFLICT DO NOTHING`, not an error.

use std::collections::HashMap;

use super::events::{
    accepted, job, key_reused, record_changed, replay, request_hash, validate_idempotency_key,
    IngestedEvent, NewEvent, ReplayRow,
};
use super::Store;
use crate::error::{Error, Result};

/// The key, then a [`ReplayRow`].
type KeyedReplayRow = (
    String,
    Vec<u8>,
    uuid::Uuid,
    String,
    chrono::DateTime<chrono::Utc>,
    i64,
);

/// What became of one item of a batch.
#[derive(Debug)]
pub enum ItemOutcome {
    /// Stored and fanned out now.
    Accepted(IngestedEvent),
    /// Its idempotency key was used before (in an earlier request or earlier in
    /// this batch) with the same body: the event stored then.
    Replayed(IngestedEvent),
    /// Not stored, and why.
    Refused(Error),
}

/// Where each item of the batch stands before the database answers.
enum Plan {
    /// Refused before reaching the database.
    Refused(Error),
    /// Sent to the database as job number `.0`.
    Sent(usize),
    /// Same key as the earlier item `first`: resolves to its outcome, or to the
    /// key's stored record.
    Repeat { first: usize },
}

impl Store {
    /// Stores a batch of events for one tenant in one group-commit statement and
    /// answers one outcome per item, in order. Keys repeated inside the batch
    /// resolve to one event: the first item with the key is stored, and later ones
    /// replay it (same body) or are refused (other body), exactly as separate
    /// requests would. `Err` only when the batch as a whole could not be written
    /// (database unavailable): then none of it was committed by this call, bar the
    /// lost-answer case documented on `Batcher::submit`.
    pub async fn ingest_batch(
        &self,
        tenant: &str,
        items: &[NewEvent<'_>],
    ) -> Result<Vec<ItemOutcome>> {
        let mut plans = Vec::with_capacity(items.len());
        let mut hashes = Vec::with_capacity(items.len());
        let mut jobs = Vec::with_capacity(items.len());
        let mut first_with_key: HashMap<&str, usize> = HashMap::new();
        for (i, ev) in items.iter().enumerate() {
            let hash = request_hash(ev);
            hashes.push(hash);
            if let Some(k) = ev.idempotency_key {
                if let Err(e) = validate_idempotency_key(k) {
                    plans.push(Plan::Refused(e));
                    continue;
                }
                if let Some(&first) = first_with_key.get(k) {
                    plans.push(Plan::Repeat { first });
                    continue;
                }
                first_with_key.insert(k, i);
            }
            plans.push(Plan::Sent(jobs.len()));
            jobs.push(job(tenant, ev, &hash));
        }
        // What each job answers if it is created (its deliveries filled in below).
        let fresh: Vec<IngestedEvent> = jobs.iter().map(|j| accepted(j, 0)).collect();
        let written = if jobs.is_empty() {
            Vec::new()
        } else {
            self.batcher().submit(jobs).await?
        };

        // Keys that existed before this batch: one look-up for all of them.
        let existing: Vec<&str> = plans
            .iter()
            .zip(items)
            .filter_map(|(p, ev)| match p {
                Plan::Sent(j) if !written.get(*j).is_some_and(|w| w.0) => ev.idempotency_key,
                _ => None,
            })
            .collect();
        let stored = self.replay_rows(tenant, &existing).await?;

        let mut out: Vec<ItemOutcome> = Vec::with_capacity(items.len());
        for (i, plan) in plans.into_iter().enumerate() {
            let outcome = match plan {
                Plan::Refused(e) => ItemOutcome::Refused(e),
                Plan::Sent(j) => {
                    let (created, deliveries) = written
                        .get(j)
                        .copied()
                        .ok_or(Error::Db(sqlx::Error::RowNotFound))?;
                    if created {
                        ItemOutcome::Accepted(IngestedEvent {
                            deliveries,
                            ..fresh[j].clone()
                        })
                    } else {
                        resolve_stored(&stored, items[i].idempotency_key, &hashes[i])
                    }
                }
                Plan::Repeat { first } => match &out[first] {
                    // The first item with the key was stored or replayed here: compare
                    // with the body it carried.
                    ItemOutcome::Accepted(ev) | ItemOutcome::Replayed(ev) => {
                        if hashes[first] == hashes[i] {
                            ItemOutcome::Replayed(ev.clone())
                        } else {
                            ItemOutcome::Refused(key_reused())
                        }
                    }
                    // It was refused against the key's stored record (another body):
                    // this one may still match that record.
                    ItemOutcome::Refused(_) => {
                        resolve_stored(&stored, items[i].idempotency_key, &hashes[i])
                    }
                },
            };
            out.push(outcome);
        }
        Ok(out)
    }

    /// The stored records of `keys` (tenant-scoped), by key.
    async fn replay_rows(&self, tenant: &str, keys: &[&str]) -> Result<HashMap<String, ReplayRow>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<KeyedReplayRow> = sqlx::query_as(
            "SELECT k.key, k.request_hash, e.id, e.event_type, e.created_at,
                        (SELECT count(*) FROM deliveries d WHERE d.event_id = e.id)
                 FROM idempotency_keys k JOIN events e ON e.id = k.event_id
                 WHERE k.tenant = $1 AND k.key = ANY($2)",
        )
        .bind(tenant)
        .bind(keys)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(k, h, id, t, at, n)| (k, (h, id, t, at, n)))
            .collect())
    }
}

/// The outcome of an item whose key already had a record.
fn resolve_stored(
    stored: &HashMap<String, ReplayRow>,
    key: Option<&str>,
    hash: &[u8; 32],
) -> ItemOutcome {
    // Only keyed items can find their key taken; the record can only vanish if it
    // was pruned between the two statements.
    match key.and_then(|k| stored.get(k)) {
        None => ItemOutcome::Refused(record_changed()),
        Some(row) => match replay(row, hash) {
            Ok(ev) => ItemOutcome::Replayed(ev),
            Err(e) => ItemOutcome::Refused(e),
        },
    }
}

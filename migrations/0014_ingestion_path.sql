-- What ingestion writes, trimmed: two indexes and a foreign key that cost every
-- accepted event and served too little.
--
-- Ingestion is bound by Postgres's CPU, and each index is one more B-tree
-- insert (and its WAL) per event: with pgbench on the ingestion statement the
-- two indexes were about a tenth of its cost.
--
-- * `events_tenant_idx (tenant, id)` served no query: events are only ever
--   read by id (the primary key), and listings go through `deliveries`.
-- * `events_created_idx (created_at)` served only retention. An event's id is a
--   UUIDv7 drawn by the API when it accepts the event, so the id carries the
--   same instant (to the millisecond) and the primary key orders events by
--   age. Retention now scans the primary key up to the smallest UUIDv7 of its
--   cutoff, and still checks `created_at`, so it never deletes a younger event
--   whatever an id holds (see `Store::prune`).
DROP INDEX events_tenant_idx;
DROP INDEX events_created_idx;

-- * `idempotency_keys.event_id REFERENCES events ON DELETE CASCADE` made every
--   keyed event lock its event row (FOR KEY SHARE, a WAL record of its own)
--   and, worse, made every event that retention deleted scan the whole key
--   table, which has no index on `event_id`: with 500,000 keys, deleting 100
--   events took 2.5 s, so one retention batch of 1,000 took about 25 s and
--   grew with the key table. The reference now holds by order instead: a
--   record is stamped with its event's instant, lives at most as long as the
--   event, and retention deletes expired records before any event (see
--   `Store::prune`).
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_event_id_fkey;

-- Two indexes on `events` that cost every ingestion and served too little.
--
-- Ingestion is bound by Postgres's CPU, and each index is one more B-tree
-- insert (and its WAL) per event: with pgbench on the ingestion statement these
-- two were about a tenth of its cost.
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

-- Foreign keys on the queue's hot path, dropped.
--
-- Each of them cost, for every delivery, a lookup of the parent row that also
-- row-locks it (FOR KEY SHARE): the event when its deliveries are inserted, the
-- endpoint (one hot row for every event of a busy endpoint, which concurrent
-- ingestion batches then share as a multixact) and the delivery when its attempt
-- is logged. That is about a tenth of the database's CPU and WAL per delivery.
--
-- The references still hold by construction, because each child row is written
-- by the statement that writes or reads its parent:
--   * deliveries are inserted by the ingestion statement that inserts their event,
--     joined to endpoints that exist (endpoints are only ever soft-deleted);
--   * an attempt is logged by the completion statement that updates its delivery,
--     joined to the rows that UPDATE returned.
-- What ON DELETE CASCADE did is now done explicitly by the only two statements
-- that delete: retention (Store::prune) and the dead-letter purge
-- (Store::purge_dead), each in one statement.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_endpoint_id_fkey;
ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_delivery_id_fkey;

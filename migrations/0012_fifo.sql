-- Ordered delivery per endpoint (opt-in): `ordering = 'fifo'` sends an
-- endpoint's deliveries one at a time, in the order their events were accepted.
CREATE TYPE endpoint_ordering AS ENUM ('none', 'fifo');
ALTER TABLE endpoints ADD COLUMN ordering endpoint_ordering NOT NULL DEFAULT 'none';

-- Copied from the endpoint at fan-out (and rewritten on the endpoint's pending
-- rows when `ordering` changes), so the claim of ordinary rows needs no join to
-- know they are ordinary. Adding a NOT NULL column with a constant default does
-- not rewrite the table.
ALTER TABLE deliveries ADD COLUMN fifo boolean NOT NULL DEFAULT false;

-- The claim index now holds ordinary rows only. FIFO rows behind their endpoint's
-- head are "due" by their timestamp but must not be sent; left in this index they
-- would sit at its front (the oldest due times) and every claim would step over
-- all of them. FIFO rows are found through deliveries_fifo_idx instead: one probe
-- per endpoint with FIFO work, whatever its backlog.
DROP INDEX deliveries_due_idx;
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at, id)
  WHERE status = 'pending' AND next_attempt_at IS NOT NULL AND NOT fifo;

-- Each FIFO endpoint's unfinished deliveries in acceptance order, by state: the
-- claim's head probe (the first 'pending' entry of an endpoint), its "anything
-- in flight?" probe, and the skip scan over the endpoints that have FIFO work.
-- Acceptance order is (created_at, event_id): an event's created_at is stamped by
-- the API when it accepts it, and event ids are UUIDv7 drawn from a per-process
-- monotonic generator, so events of one batch request (same instant) keep their
-- item order. The delivery id is only a last tie-break: delivery ids are drawn in
-- SQL in no particular order across the events of one group commit.
CREATE INDEX deliveries_fifo_idx ON deliveries (endpoint_id, status, created_at, event_id, id)
  WHERE fifo AND status IN ('pending', 'in_flight');

-- The invariant itself, enforced by the schema: at most one FIFO delivery of an
-- endpoint in flight. The claim is written never to break it (see Store::claim);
-- this makes a claim that raced on a stale snapshot fail instead of sending two.
CREATE UNIQUE INDEX deliveries_fifo_one_in_flight ON deliveries (endpoint_id)
  WHERE fifo AND status = 'in_flight';

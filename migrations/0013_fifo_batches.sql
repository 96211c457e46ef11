-- Batching for FIFO endpoints: with `batch_size` N > 1, a FIFO endpoint receives
-- up to N queued events in one request (a JSON array, in acceptance order).
-- Applies only to FIFO endpoints with the standard format and no transformation;
-- the API refuses other combinations, and the worker sends one at a time
-- whenever the endpoint is not such an endpoint at the moment of the claim.
ALTER TABLE endpoints ADD COLUMN batch_size int NOT NULL DEFAULT 1
  CHECK (batch_size BETWEEN 1 AND 100);

-- The batch a FIFO delivery was sent in (a UUIDv7 drawn when the batch was
-- formed). A batch's members are fixed when it is first
-- sent and it is retried with exactly those members (or fewer, never more), so
-- its `webhook-id` (derived from this id) always names the same events: a
-- receiver that deduplicates on it can never drop an event it did not get.
-- Cleared by a redrive: the redriven delivery goes in a new batch, new id.
ALTER TABLE deliveries ADD COLUMN batch_id uuid;

-- A batch's other members while it is unfinished: read when its head is
-- claimed again after a failed attempt, and written when it completes.
CREATE INDEX deliveries_batch_idx ON deliveries (batch_id)
  WHERE batch_id IS NOT NULL AND status IN ('pending', 'in_flight');

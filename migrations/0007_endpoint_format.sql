-- Built-in formats for chat destinations, and rate limits that spend no attempt.
--
-- `format` says how a delivery's body is rendered for the endpoint: `standard`
-- sends the Standard Webhooks envelope as stored in events.body; `discord` and
-- `slack` render a readable chat message from it at send time (domain::formats).
CREATE TYPE endpoint_format AS ENUM ('standard', 'discord', 'slack');
ALTER TABLE endpoints ADD COLUMN format endpoint_format NOT NULL DEFAULT 'standard';

-- Responses of the current round that were rate limits (429) and were rescheduled
-- without spending an attempt. `attempts` still counts every request on the
-- wire (it numbers the attempt log), so the budget spent in a round is
-- attempts - round_base - rate_limited. Reset by a redrive, like round_base.
-- Bounded by the worker (domain::state::RATE_LIMIT_ALLOWANCE): past it, a 429
-- spends an attempt like any failure, so an endpoint that always answers 429
-- cannot keep a delivery forever.
ALTER TABLE deliveries ADD COLUMN rate_limited int NOT NULL DEFAULT 0;
-- NOT VALID: every existing row has 0, which satisfies it, so there is nothing to
-- scan the queue for under this migration's lock; new writes are checked.
ALTER TABLE deliveries ADD CONSTRAINT deliveries_rate_limited_check
  CHECK (rate_limited >= 0 AND round_base + rate_limited <= attempts) NOT VALID;

-- An attempt log row that was a rate limit, shown to users as such.
ALTER TABLE delivery_attempts ADD COLUMN rate_limited boolean NOT NULL DEFAULT false;

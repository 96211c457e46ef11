-- HookIt schema. PostgreSQL is the queue: events are immutable, deliveries are the
-- queue rows that workers claim with FOR UPDATE SKIP LOCKED, delivery_attempts is the
-- append-only log of what happened on the wire.

-- Time-ordered UUIDv7 generated in the database, so that the ingestion statement can
-- fan an event out to N delivery rows without a second round trip for ids.
CREATE FUNCTION hookit_uuid_v7() RETURNS uuid AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$ LANGUAGE sql VOLATILE PARALLEL SAFE;

-- Event-type subscription match: exact, `prefix.*` or `*`.
CREATE FUNCTION hookit_event_type_matches(patterns text[], event_type text) RETURNS boolean AS $$
  SELECT EXISTS (
    SELECT 1 FROM unnest(patterns) AS p
    WHERE p = '*' OR p = event_type
       OR (right(p, 2) = '.*' AND starts_with(event_type, left(p, -1)))
  )
$$ LANGUAGE sql IMMUTABLE PARALLEL SAFE;

CREATE TABLE api_keys (
  id          uuid PRIMARY KEY,
  tenant      text NOT NULL CHECK (length(tenant) BETWEEN 1 AND 253),
  key_hash    bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
  name        text,
  -- Keys granted by a Kubernetes Secret are revoked when the Secret goes.
  k8s_secret  text UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);

CREATE TYPE endpoint_status AS ENUM ('active', 'paused', 'disabled');

CREATE TABLE endpoints (
  id                    uuid PRIMARY KEY,
  tenant                text NOT NULL,
  url                   text NOT NULL,
  description           text NOT NULL DEFAULT '',
  event_types           text[] NOT NULL DEFAULT ARRAY['*'],
  status                endpoint_status NOT NULL DEFAULT 'active',
  disabled_reason       text,
  -- AES-256-GCM(nonce || ciphertext) of the signing secret, AAD = endpoint id.
  secret_enc            bytea NOT NULL,
  -- The previous secret keeps signing until prev_secret_expires_at (rotation overlap).
  prev_secret_enc       bytea,
  prev_secret_expires_at timestamptz,
  headers               jsonb NOT NULL DEFAULT '{}'::jsonb,
  max_attempts          int CHECK (max_attempts BETWEEN 1 AND 100),
  retry_base_ms         bigint CHECK (retry_base_ms > 0),
  retry_cap_ms          bigint CHECK (retry_cap_ms > 0),
  timeout_ms            bigint CHECK (timeout_ms BETWEEN 100 AND 300000),
  rate_limit            int CHECK (rate_limit > 0),
  max_in_flight         int CHECK (max_in_flight > 0),
  -- Circuit breaker: consecutive failures, and while open, when the next probe may go.
  consecutive_failures  int NOT NULL DEFAULT 0,
  circuit_open_until    timestamptz,
  -- Current probe interval while open; doubles after each failed probe.
  circuit_probe_ms      bigint,
  failing_since         timestamptz,
  -- Set when the endpoint is owned by a WebhookEndpoint custom resource.
  managed_by            text CHECK (managed_by IN ('kubernetes')),
  k8s_uid               text UNIQUE,
  k8s_name              text,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),
  deleted_at            timestamptz,
  CHECK ((status = 'disabled') = (disabled_reason IS NOT NULL)),
  CHECK ((managed_by IS NULL) = (k8s_uid IS NULL))
);
CREATE INDEX endpoints_tenant_idx ON endpoints (tenant, id) WHERE deleted_at IS NULL;

-- Events are written once and never updated: the payload lives here, away from the
-- hot, frequently updated delivery rows. `body` is the exact JSON envelope that is
-- sent ({"id","type","timestamp","data"}), serialized once at ingestion and reused
-- for every attempt.
CREATE TABLE events (
  id          uuid PRIMARY KEY,
  tenant      text NOT NULL,
  event_type  text NOT NULL,
  body        text NOT NULL,
  traceparent text,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_tenant_idx ON events (tenant, id);
CREATE INDEX events_created_idx ON events (created_at);

CREATE TABLE idempotency_keys (
  tenant       text NOT NULL,
  key          text NOT NULL,
  request_hash bytea NOT NULL,
  event_id     uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

CREATE TYPE delivery_status AS ENUM ('pending', 'in_flight', 'succeeded', 'dead');

-- The queue. Kept narrow: every attempt updates a row, so the row should be small
-- and leave room on its page (fillfactor) for the new version.
CREATE TABLE deliveries (
  id               uuid PRIMARY KEY,
  tenant           text NOT NULL,
  event_id         uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
  endpoint_id      uuid NOT NULL REFERENCES endpoints (id),
  status           delivery_status NOT NULL DEFAULT 'pending',
  attempts         int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  -- Attempts made before the current round: a redrive starts a fresh attempt budget
  -- by setting this to `attempts`, and the history of earlier rounds is kept.
  round_base       int NOT NULL DEFAULT 0 CHECK (round_base <= attempts),
  -- NULL while pending means "held": the endpoint is paused and nothing is spent.
  next_attempt_at  timestamptz,
  lease_owner      uuid,
  lease_expires_at timestamptz,
  last_status_code int,
  last_error       text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  finished_at      timestamptz,
  CHECK ((status = 'in_flight') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
  CHECK ((status IN ('succeeded', 'dead')) = (finished_at IS NOT NULL)),
  CHECK (status = 'pending' OR next_attempt_at IS NULL)
) WITH (
  fillfactor = 80,
  -- A queue churns: every delivery is inserted and updated twice, and the dead
  -- versions pile up at the head of the claim index until vacuum removes them.
  -- Vacuum early and without throttling, rather than at the default 20 % of the table.
  autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0.05,
  autovacuum_vacuum_cost_delay = 0,
  autovacuum_analyze_scale_factor = 0.02
);

-- The claim index: exactly the predicate and order of the claim query, so claiming is
-- an index range scan whatever the backlog (no sequential scan at 1 M rows).
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at, id) WHERE status = 'pending' AND next_attempt_at IS NOT NULL;
-- Held rows (paused endpoint): small, lets the un-hold sweep find them cheaply.
CREATE INDEX deliveries_held_idx ON deliveries (endpoint_id) WHERE status = 'pending' AND next_attempt_at IS NULL;
-- Lease rescue: in-flight rows whose worker died.
CREATE INDEX deliveries_lease_idx ON deliveries (lease_expires_at) WHERE status = 'in_flight';
-- API listings (newest first, per tenant) and filters.
CREATE INDEX deliveries_tenant_idx ON deliveries (tenant, id DESC);
CREATE INDEX deliveries_endpoint_idx ON deliveries (endpoint_id, status, id DESC);
CREATE INDEX deliveries_event_idx ON deliveries (event_id);
CREATE INDEX deliveries_dead_idx ON deliveries (tenant, finished_at) WHERE status = 'dead';

-- Append-only log of every attempt made on the wire.
CREATE TABLE delivery_attempts (
  delivery_id   uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
  attempt       int NOT NULL,
  endpoint_id   uuid NOT NULL,
  started_at    timestamptz NOT NULL,
  duration_ms   int NOT NULL,
  status_code   int,
  error         text,
  response_body text,
  succeeded     boolean NOT NULL,
  PRIMARY KEY (delivery_id, attempt)
);
-- Every statistics query filters by endpoint (the tenant's endpoints), so one
-- index serves them all; a second, time-only index would cost a write per attempt.
CREATE INDEX delivery_attempts_endpoint_time_idx ON delivery_attempts (endpoint_id, started_at);

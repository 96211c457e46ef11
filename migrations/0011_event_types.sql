-- The event-type catalog (issue 12 §2) and per-tenant settings.
--
-- tenant_settings: one row per tenant that set something or wrote a catalog.
-- `catalog_version` is bumped by every write to the tenant's event types, in the
-- writing transaction; each API process compares it with the version its compiled
-- validators were built from (one primary-key read per tenant per second at most),
-- and reloads only the types whose `version` is newer (db::event_types).
CREATE TABLE tenant_settings (
  tenant             text PRIMARY KEY CHECK (length(tenant) BETWEEN 1 AND 253),
  -- Refuse events whose type is not in the catalog.
  strict_event_types boolean NOT NULL DEFAULT false,
  catalog_version    bigint NOT NULL DEFAULT 0 CHECK (catalog_version >= 0),
  updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Types are never deleted, only deprecated: events of a type outlive its entry,
-- and a consumer reading the catalog should still find what old events meant.
CREATE TABLE event_types (
  tenant        text NOT NULL REFERENCES tenant_settings (tenant),
  name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
  description   text NOT NULL DEFAULT '' CHECK (length(description) <= 4096),
  -- JSON text as the tenant wrote it (not jsonb): key order is part of what a
  -- reader of the schema and the example sees.
  schema        text,
  example       text,
  -- The catalog_version of the write that last changed this row.
  version       bigint NOT NULL CHECK (version > 0),
  deprecated_at timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, name)
);
-- The validator cache's incremental reload: types of a tenant newer than V.
CREATE INDEX event_types_version_idx ON event_types (tenant, version);

-- Fan-out without a function call per endpoint.
--
-- Ingestion joined every event to every endpoint of its tenant and evaluated
-- hookit_event_type_matches (an unnest per endpoint row) on each pair. With
-- 1,000 endpoints in a tenant that was most of the database's CPU per event
-- (measured by `hookit bench --scenario fleet`). The patterns an event type
-- can match are few and known from the type alone: `*`, the type itself, and
-- `<prefix>.*` for each proper dot-prefix. Ingestion computes that set once per
-- event and tests each endpoint with the array-overlap operator, which is the
-- same rule for every valid pattern (see domain::patterns).
CREATE FUNCTION hookit_event_type_patterns(event_type text) RETURNS text[] AS $$
  SELECT ARRAY['*', event_type]
         || coalesce(array_agg(array_to_string(parts[1:i], '.') || '.*' ORDER BY i), '{}')
  FROM string_to_array(event_type, '.') AS parts,
       generate_series(1, cardinality(parts) - 1) AS i
$$ LANGUAGE sql IMMUTABLE PARALLEL SAFE;

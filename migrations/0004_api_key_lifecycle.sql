-- API keys users can manage: an expiry, when a key was last used (written at most
-- once a minute per key, never per request), and a short prefix of generated
-- keys so `hookit keys list` can tell them apart without showing them. Keys from
-- Kubernetes Secrets keep no prefix: their values are chosen by people, and a
-- prefix of a short one would be most of it.
ALTER TABLE api_keys
  ADD COLUMN expires_at   timestamptz,
  ADD COLUMN last_used_at timestamptz,
  ADD COLUMN key_prefix   text;

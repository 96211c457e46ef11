-- Per-endpoint transformations (src/transform): JavaScript run before a delivery
-- is sent. The code lives on the endpoint; the claim returns only its content
-- hash, and workers keep compiled handlers by that hash, so an edit is simply a
-- new hash and nothing has to be invalidated.
ALTER TABLE endpoints ADD COLUMN transformation text
  CHECK (octet_length(transformation) BETWEEN 1 AND 65536);
-- SHA-256 of the code's UTF-8 bytes, written with it (a generated column cannot
-- use convert_to, which is not immutable).
ALTER TABLE endpoints ADD COLUMN transformation_sha bytea;
ALTER TABLE endpoints ADD CONSTRAINT endpoints_transformation_sha_check
  CHECK ((transformation IS NULL) = (transformation_sha IS NULL));

-- A transformation may cancel a delivery (`cancel: true`): it ends `skipped`,
-- not succeeded (nothing was delivered) and not dead (nothing failed). The value
-- cannot be used in this transaction; 0010 adds the constraint that uses it.
ALTER TYPE delivery_status ADD VALUE IF NOT EXISTS 'skipped';

-- Attempts that never went on the wire: the transformation refused to build the
-- request (it threw, ran out of time or memory, or returned something unsendable)
-- or cancelled it. They are logged so the user sees why, but they say nothing
-- about the receiver: they count neither as its failures nor toward its circuit.
ALTER TABLE delivery_attempts ADD COLUMN sent boolean NOT NULL DEFAULT true;

-- `skipped` (0009) is terminal like `succeeded` and `dead`: it has a finished_at.
-- The original CHECK was unnamed, so it is found by its definition.
DO $$
DECLARE c text;
BEGIN
  SELECT conname INTO c FROM pg_constraint
  WHERE conrelid = 'deliveries'::regclass AND contype = 'c'
    AND pg_get_constraintdef(oid) LIKE '%finished_at IS NOT NULL%';
  IF c IS NOT NULL THEN
    EXECUTE format('ALTER TABLE deliveries DROP CONSTRAINT %I', c);
  END IF;
END $$;
-- NOT VALID: every existing row satisfies it (no row is `skipped` yet), so the
-- queue is not scanned under this migration's lock; new writes are checked.
ALTER TABLE deliveries ADD CONSTRAINT deliveries_finished_check
  CHECK ((status IN ('succeeded', 'dead', 'skipped')) = (finished_at IS NOT NULL)) NOT VALID;

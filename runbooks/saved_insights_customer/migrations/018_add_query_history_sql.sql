-- Stand-in (see 000). Number 018 is taken: seed 001's Phase 7 plan proposed it again.
ALTER TABLE "QueryHistory" ADD COLUMN IF NOT EXISTS sql TEXT;

-- The precedent seed 001 cites: "ContextDiscoveryRun: Uses customer_id UUID NOT NULL REFERENCES
-- "Customer"(id)".
CREATE TABLE IF NOT EXISTS "ContextDiscoveryRun" (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  customer_id UUID NOT NULL REFERENCES "Customer"(id) ON DELETE CASCADE,
  question TEXT NOT NULL,
  status VARCHAR(20) NOT NULL DEFAULT 'pending',
  "createdAt" TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_context_discovery_run_customer ON "ContextDiscoveryRun" (customer_id);

-- The precedent seed 001 cites: "SemanticIndex: Uses customer_id UUID NOT NULL REFERENCES
-- "Customer"(id)".
CREATE TABLE IF NOT EXISTS "SemanticIndex" (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  customer_id UUID NOT NULL REFERENCES "Customer"(id) ON DELETE CASCADE,
  entity VARCHAR(255) NOT NULL,
  embedding JSONB,
  "createdAt" TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_semantic_index_customer ON "SemanticIndex" (customer_id);

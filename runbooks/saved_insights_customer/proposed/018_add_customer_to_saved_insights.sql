-- Seed 001, "Phase 7 Proposed Change" as the Phase 7 document proposed it (number 018, customer
-- stored as its code). The statements are the seed's own three fragments, in its order.

ALTER TABLE "SavedInsights"
ADD COLUMN "customerId" VARCHAR(50) NULL;  -- Stores customer code as string

ALTER TABLE "SavedInsights"
DROP CONSTRAINT IF EXISTS "SavedInsights_scope_check";

ALTER TABLE "SavedInsights"
ADD CONSTRAINT "SavedInsights_scope_check"
CHECK (scope IN ('form', 'schema', 'semantic'));

ALTER TABLE "SavedInsights"
ADD COLUMN "semanticContext" JSONB NULL;

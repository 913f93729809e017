-- Rollback 022: Remove customer and semantic support from SavedInsights

BEGIN;

-- Remove semantic context column
ALTER TABLE "SavedInsights" DROP COLUMN IF EXISTS "semanticContext";

-- Restore original scope constraint
ALTER TABLE "SavedInsights"
DROP CONSTRAINT IF EXISTS "SavedInsights_scope_check";

ALTER TABLE "SavedInsights"
ADD CONSTRAINT "SavedInsights_scope_check"
CHECK (scope IN ('form', 'schema'));

-- Remove customer index
DROP INDEX IF EXISTS idx_saved_insights_customer;

-- Remove customer foreign key column
ALTER TABLE "SavedInsights" DROP COLUMN IF EXISTS "customerId";

COMMIT;

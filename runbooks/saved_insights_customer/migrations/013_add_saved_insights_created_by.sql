-- Stand-in (see 000).
ALTER TABLE "SavedInsights" ADD COLUMN IF NOT EXISTS "createdBy" INTEGER NULL REFERENCES "Users"(id) ON DELETE SET NULL;
CREATE INDEX IF NOT EXISTS idx_saved_insights_created_by ON "SavedInsights" ("createdBy");

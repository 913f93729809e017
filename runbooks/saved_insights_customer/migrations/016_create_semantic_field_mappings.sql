-- Stand-in (see 000).
CREATE TABLE IF NOT EXISTS "SemanticFieldMapping" (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  "semanticIndexId" UUID NOT NULL REFERENCES "SemanticIndex"(id) ON DELETE CASCADE,
  "fieldId" UUID NOT NULL REFERENCES "FormField"(id) ON DELETE CASCADE,
  confidence REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_semantic_field_mapping_index ON "SemanticFieldMapping" ("semanticIndexId");
CREATE INDEX IF NOT EXISTS idx_semantic_field_mapping_field ON "SemanticFieldMapping" ("fieldId");

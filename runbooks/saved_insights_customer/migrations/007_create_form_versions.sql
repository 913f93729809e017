-- Stand-in (see 000).
CREATE TABLE IF NOT EXISTS "FormVersion" (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  "formId" UUID NOT NULL REFERENCES "Form"(id) ON DELETE CASCADE,
  version INTEGER NOT NULL,
  definition JSONB NOT NULL,
  UNIQUE ("formId", version)
);

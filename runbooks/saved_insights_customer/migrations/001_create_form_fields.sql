-- Stand-in (see 000).
CREATE TABLE IF NOT EXISTS "FormField" (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  "formId" UUID NOT NULL REFERENCES "Form"(id) ON DELETE CASCADE,
  label TEXT NOT NULL,
  "fieldType" VARCHAR(30) NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_form_field_form ON "FormField" ("formId");

-- Stand-in (see 000).
CREATE TABLE IF NOT EXISTS "Submission" (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  "formId" UUID NOT NULL REFERENCES "Form"(id) ON DELETE CASCADE,
  "submittedAt" TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_submission_form ON "Submission" ("formId", "submittedAt");

-- Stand-in (see 000).
CREATE TABLE IF NOT EXISTS "SubmissionValue" (
  id BIGSERIAL PRIMARY KEY,
  "submissionId" UUID NOT NULL REFERENCES "Submission"(id) ON DELETE CASCADE,
  "fieldId" UUID NOT NULL REFERENCES "FormField"(id) ON DELETE CASCADE,
  value TEXT
);
CREATE INDEX IF NOT EXISTS idx_submission_value_submission ON "SubmissionValue" ("submissionId");
CREATE INDEX IF NOT EXISTS idx_submission_value_field ON "SubmissionValue" ("fieldId");

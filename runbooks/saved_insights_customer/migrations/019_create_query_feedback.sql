-- Stand-in (see 000). Number 019 is taken: seed 001's Phase 7.5 plan proposed it again.
CREATE TABLE IF NOT EXISTS "QueryFeedback" (
  id BIGSERIAL PRIMARY KEY,
  "queryId" BIGINT NOT NULL REFERENCES "QueryHistory"(id) ON DELETE CASCADE,
  helpful BOOLEAN NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_query_feedback_query ON "QueryFeedback" ("queryId");

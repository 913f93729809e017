-- Stand-in (see 000).
CREATE TABLE IF NOT EXISTS "QueryHistory" (
  id BIGSERIAL PRIMARY KEY,
  "userId" INTEGER REFERENCES "Users"(id) ON DELETE SET NULL,
  question TEXT NOT NULL,
  "createdAt" TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_query_history_user ON "QueryHistory" ("userId", "createdAt");

-- Seed 001, "Phase 7.5 Proposed" as the Phase 7.5 document proposed it (number 019, customer and
-- user stored as strings). The seed quotes the first columns and elides the rest ("-- ..."); the
-- elided columns are those of the corrected 023, so that only what the review found differs.

CREATE TABLE "ConversationThreads" (
  "id" UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  "customerId" VARCHAR(50) NOT NULL,
  "userId" VARCHAR(255) NOT NULL,
  "title" TEXT,
  "contextCache" JSONB DEFAULT '{}',
  "isActive" BOOLEAN DEFAULT true,
  "createdAt" TIMESTAMPTZ DEFAULT NOW(),
  "updatedAt" TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE "ConversationMessages" (
  "id" UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  "threadId" UUID NOT NULL REFERENCES "ConversationThreads"("id") ON DELETE CASCADE,
  "role" VARCHAR(20) NOT NULL CHECK (role IN ('user', 'assistant')),
  "content" TEXT NOT NULL,
  "metadata" JSONB DEFAULT '{}',
  "createdAt" TIMESTAMPTZ DEFAULT NOW()
);

CREATE INDEX idx_conversation_threads_user_customer
ON "ConversationThreads" ("userId", "customerId", "isActive");

CREATE INDEX idx_conversation_messages_thread
ON "ConversationMessages" ("threadId", "createdAt");

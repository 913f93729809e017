-- Seed 003 (Batch 5): prisma/migrations/20251110_add_integrity_indexes/migration.sql
-- Adds column + 3 indexes.

-- Lifecycle: all existing conversations stay open (closed_at NULL).
ALTER TABLE "Conversation"
ADD COLUMN "closed_at" TIMESTAMPTZ;

-- Integrity: one open conversation per lead (closed ones are unlimited history).
CREATE UNIQUE INDEX "Conversation_lead_open_unique"
ON "Conversation"(lead_id)
WHERE closed_at IS NULL;

-- Message recency: newest first within a conversation.
CREATE INDEX "Message_conversation_id_created_at_idx"
ON "Message"(conversation_id, created_at DESC);

-- Conversation recency: a customer's newest conversations first.
CREATE INDEX "Conversation_customer_id_started_at_idx"
ON "Conversation"(customer_id, started_at DESC);

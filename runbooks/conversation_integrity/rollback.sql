-- Seed 003 (Batch 5): rollback.sql. "Drops 3 indexes, drops closed_at column"; the rollback
-- phase then verifies the cleanup by comparing schema fingerprints.

DROP INDEX IF EXISTS "Conversation_customer_id_started_at_idx";
DROP INDEX IF EXISTS "Message_conversation_id_created_at_idx";
DROP INDEX IF EXISTS "Conversation_lead_open_unique";

ALTER TABLE "Conversation" DROP COLUMN IF EXISTS "closed_at";

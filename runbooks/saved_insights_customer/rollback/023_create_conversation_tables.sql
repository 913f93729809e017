-- Rollback 023: Remove conversation tables

BEGIN;

-- Drop trigger first
DROP TRIGGER IF EXISTS trigger_update_thread_timestamp ON "ConversationMessages";
DROP FUNCTION IF EXISTS update_conversation_thread_timestamp();

-- Drop tables (cascade will handle foreign keys)
DROP TABLE IF EXISTS "ConversationMessages" CASCADE;
DROP TABLE IF EXISTS "ConversationThreads" CASCADE;

COMMIT;

-- Seed 000, Phase 6: immediate rollback.
-- The seed leaves dropping the column optional ("can keep for future"); it is dropped here so
-- that the rollback restores exactly the schema the migration started from, which the rollback
-- phase proves by comparing fingerprints.

-- Remove FK constraint
ALTER TABLE "Event" DROP CONSTRAINT "Event_messageId_fkey";

-- Remove index
DROP INDEX "Event_messageId_idx";

-- Remove column
ALTER TABLE "Event" DROP COLUMN "messageId";

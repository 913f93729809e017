-- Seed 004's rollback was "prisma migrate resolve --rolled-back" (which only edits Prisma's
-- history) or "prisma migrate reset" (which deletes all data). This undoes the schema change and
-- keeps every row: SQLite 3.35+ drops a column in place, once no index uses it.

DROP INDEX "analytics_events_timestamp_idx";
DROP INDEX "analytics_events_userId_idx";
DROP INDEX "analytics_events_solutionType_idx";
DROP INDEX "analytics_events_eventType_idx";
DROP TABLE "analytics_events";

DROP INDEX "messages_createdAt_idx";
DROP INDEX "messages_conversationId_idx";

DROP INDEX "conversations_solutionType_idx";
ALTER TABLE "conversations" DROP COLUMN "solutionType";

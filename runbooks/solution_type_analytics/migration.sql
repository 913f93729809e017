-- Seed 004: prisma/migrations/<stamp>_add_solution_type_and_analytics/migration.sql, as Prisma
-- generates it for SQLite.

-- AlterTable
ALTER TABLE "conversations" ADD COLUMN "solutionType" TEXT;

-- CreateTable
CREATE TABLE "analytics_events" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "eventType" TEXT NOT NULL,
    "solutionType" TEXT,
    "userId" TEXT,
    "conversationId" TEXT,
    "model" TEXT,
    "metadata" TEXT,
    "timestamp" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- CreateIndex
CREATE INDEX "conversations_solutionType_idx" ON "conversations"("solutionType");

-- CreateIndex
CREATE INDEX "messages_conversationId_idx" ON "messages"("conversationId");

-- CreateIndex
CREATE INDEX "messages_createdAt_idx" ON "messages"("createdAt");

-- CreateIndex
CREATE INDEX "analytics_events_eventType_idx" ON "analytics_events"("eventType");

-- CreateIndex
CREATE INDEX "analytics_events_solutionType_idx" ON "analytics_events"("solutionType");

-- CreateIndex
CREATE INDEX "analytics_events_userId_idx" ON "analytics_events"("userId");

-- CreateIndex
CREATE INDEX "analytics_events_timestamp_idx" ON "analytics_events"("timestamp");

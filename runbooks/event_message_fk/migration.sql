-- Seed 000, Phase 1, Step 1.2: the migration SQL Prisma generates for
-- prisma/migrations/20260114112937_add_messageid_to_event/migration.sql

-- AlterTable
ALTER TABLE "Event" ADD COLUMN "messageId" TEXT;

-- CreateIndex
CREATE INDEX "Event_messageId_idx" ON "Event"("messageId");

-- AddForeignKey
ALTER TABLE "Event" ADD CONSTRAINT "Event_messageId_fkey"
  FOREIGN KEY ("messageId") REFERENCES "Message"("id")
  ON DELETE CASCADE ON UPDATE CASCADE;

-- Seed 002, Steps 4 and 5: remove the deprecated arrays. Runs only after a passed verification
-- is in the ledger; after it, the rollback window is closed.
ALTER TABLE messages DROP COLUMN attachments, DROP COLUMN "toolCalls", DROP COLUMN "partialToolCalls";

-- Seed 002's rollback plan, step 3: "Drop new tables". Possible only before the cleanup: after
-- it the arrays are gone ("Rollback window closed after cleanup"), and the rollback phase refuses.
DROP TABLE "toolCalls";
DROP TABLE attachments;

-- Seed 002's rollback plan, step 3: "Drop new tables", and the dual-write trigger that fed them.
-- Possible only before the cleanup: after it the arrays are gone ("Rollback window closed after
-- cleanup"), and the rollback phase refuses.
DROP TRIGGER messages_dual_write ON messages;
DROP FUNCTION messages_dual_write();
DROP TABLE "toolCalls";
DROP TABLE attachments;

-- Seed 002, Step 3 "Dual-write": until the cleanup, the application still writes the arrays, and
-- this trigger keeps the new tables in step with every write to them (a message inserted, or its
-- arrays changed, after its batch ran). It is installed with the schema (runbook.yaml lists this
-- file among the migration's) and removed by the cleanup before the arrays go (backfill.dual_write).
-- The rows of a written message are replaced whole, with the backfill's own mapping.

CREATE FUNCTION messages_dual_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM attachments WHERE "messageId" = NEW.id;
    DELETE FROM "toolCalls" WHERE "messageId" = NEW.id;
    INSERT INTO attachments ("messageId", "conversationId", "userId", position, type, name, "storageId",
                             "mimeType", size, metadata, "createdAt")
    SELECT NEW.id, NEW."conversationId", NEW."userId", a.ord, a.e->>'type', a.e->>'name', a.e->>'storageId',
           a.e->>'mimeType', (a.e->>'size')::bigint, a.e->'metadata', NEW."createdAt"
    FROM jsonb_array_elements(coalesce(NEW.attachments, '[]')) WITH ORDINALITY AS a(e, ord);
    INSERT INTO "toolCalls" ("messageId", "conversationId", "userId", "toolCallId", "toolName", args, result,
                             "textPosition", "isPartial", "timestamp", "createdAt")
    SELECT NEW.id, NEW."conversationId", NEW."userId", t.e->>'id', t.e->>'name',
           CASE WHEN jsonb_typeof(t.e->'args') = 'string' THEN (t.e->>'args')::jsonb ELSE t.e->'args' END,
           CASE WHEN jsonb_typeof(t.e->'result') = 'string' THEN (t.e->>'result')::jsonb ELSE t.e->'result' END,
           (t.e->>'textPosition')::int, t.partial, (t.e->>'timestamp')::bigint, NEW."createdAt"
    FROM (
        SELECT e, false AS partial FROM jsonb_array_elements(coalesce(NEW."toolCalls", '[]')) AS e
        UNION ALL
        SELECT p, true FROM jsonb_array_elements(coalesce(NEW."partialToolCalls", '[]')) AS p
        WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(NEW."toolCalls", '[]')) AS c
                          WHERE c->>'id' = p->>'id')
    ) AS t;
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_dual_write
    AFTER INSERT OR UPDATE OF attachments, "toolCalls", "partialToolCalls" ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_dual_write();

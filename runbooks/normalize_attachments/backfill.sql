-- One batch of seed 002's backfill: the messages with keys %(first)s..%(last)s. Idempotent:
-- each element has a unique key in its new table, so running a batch again inserts nothing.
-- An element that is not what the arrays should hold (an object instead of an array, a missing
-- name, a stringified args that is not JSON) fails the batch, and nothing of the batch is committed.

-- The batch's messages are locked first (FOR SHARE): while the batch runs, the application's
-- writes to these messages wait, and the dual-write trigger (dual_write.sql) runs after the batch
-- commits, so a message changed during its batch is written again by the trigger, never lost,
-- and the statements below read each message as it is now, not as a snapshot taken before.
SELECT id FROM messages WHERE id BETWEEN %(first)s AND %(last)s ORDER BY id FOR SHARE;

INSERT INTO attachments ("messageId", "conversationId", "userId", position, type, name, "storageId",
                         "mimeType", size, metadata, "createdAt")
SELECT m.id, m."conversationId", m."userId", a.ord, a.e->>'type', a.e->>'name', a.e->>'storageId',
       a.e->>'mimeType', (a.e->>'size')::bigint, a.e->'metadata', m."createdAt"
FROM messages m
CROSS JOIN LATERAL jsonb_array_elements(m.attachments) WITH ORDINALITY AS a(e, ord)
WHERE m.id BETWEEN %(first)s AND %(last)s AND m.attachments IS NOT NULL
ON CONFLICT ("messageId", position) DO NOTHING;

-- Tool calls and partial tool calls become one row per call ("Single table with isPartial flag").
-- A partial call whose id is also among the message's finished calls is the same call, left behind
-- by a finalize that never ran: it merges into the finished one (the seed's finalizeToolCalls).
-- args and result become native JSON: an older element stored them as a JSON string.
INSERT INTO "toolCalls" ("messageId", "conversationId", "userId", "toolCallId", "toolName", args, result,
                         "textPosition", "isPartial", "timestamp", "createdAt")
SELECT m.id, m."conversationId", m."userId", t.e->>'id', t.e->>'name',
       CASE WHEN jsonb_typeof(t.e->'args') = 'string' THEN (t.e->>'args')::jsonb ELSE t.e->'args' END,
       CASE WHEN jsonb_typeof(t.e->'result') = 'string' THEN (t.e->>'result')::jsonb ELSE t.e->'result' END,
       (t.e->>'textPosition')::int, t.partial, (t.e->>'timestamp')::bigint, m."createdAt"
FROM messages m
CROSS JOIN LATERAL (
    SELECT e, false AS partial FROM jsonb_array_elements(coalesce(m."toolCalls", '[]')) AS e
    UNION ALL
    SELECT p, true FROM jsonb_array_elements(coalesce(m."partialToolCalls", '[]')) AS p
    WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(m."toolCalls", '[]')) AS c WHERE c->>'id' = p->>'id')
) AS t
WHERE m.id BETWEEN %(first)s AND %(last)s
ON CONFLICT ("messageId", "toolCallId") DO NOTHING;

-- One batch of seed 002's backfill: the messages with keys %(first)s..%(last)s. Idempotent:
-- each element has a unique key in its new table, so running a batch again inserts nothing.
-- An element that is not what the arrays should hold (an object instead of an array, a missing
-- name) fails the batch, and nothing of the batch is committed.

INSERT INTO attachments ("messageId", "conversationId", "userId", position, type, name, "storageId",
                         "mimeType", size, metadata, "createdAt")
SELECT m.id, m."conversationId", m."userId", a.ord, a.e->>'type', a.e->>'name', a.e->>'storageId',
       a.e->>'mimeType', (a.e->>'size')::bigint, a.e->'metadata', m."createdAt"
FROM messages m
CROSS JOIN LATERAL jsonb_array_elements(m.attachments) WITH ORDINALITY AS a(e, ord)
WHERE m.id BETWEEN %(first)s AND %(last)s AND m.attachments IS NOT NULL
ON CONFLICT ("messageId", position) DO NOTHING;

INSERT INTO "toolCalls" ("messageId", "conversationId", "userId", "toolCallId", "toolName", args, result,
                         "textPosition", "isPartial", "timestamp", "createdAt")
SELECT m.id, m."conversationId", m."userId", t.e->>'id', t.e->>'name', t.e->'args', t.e->'result',
       (t.e->>'textPosition')::int, t.partial, (t.e->>'timestamp')::bigint, m."createdAt"
FROM messages m
CROSS JOIN LATERAL (
    SELECT e, false AS partial FROM jsonb_array_elements(coalesce(m."toolCalls", '[]')) AS e
    UNION ALL
    SELECT e, true FROM jsonb_array_elements(coalesce(m."partialToolCalls", '[]')) AS e
) AS t
WHERE m.id BETWEEN %(first)s AND %(last)s
ON CONFLICT ("messageId", "toolCallId", "isPartial") DO NOTHING;

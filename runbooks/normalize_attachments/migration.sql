-- Seed 002, Step 1 "Schema Deployment": the normalized tables beside the deprecated arrays.
-- toolCalls and partialToolCalls fold into one table with "isPartial". Each table's unique key
-- names one array element (message and position, or message and call id): it is the seed's
-- by_message index and what makes the backfill idempotent (ON CONFLICT DO NOTHING). A call is one
-- row, partial or not, so a partial call can no longer be orphaned beside its finished twin.

CREATE TABLE attachments (
    id               BIGSERIAL PRIMARY KEY,
    "messageId"      BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    "conversationId" BIGINT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    "userId"         BIGINT NOT NULL REFERENCES users(id),
    position         INTEGER NOT NULL,
    type             TEXT NOT NULL CHECK (type IN ('image', 'file', 'audio')),
    name             TEXT NOT NULL,
    "storageId"      TEXT NOT NULL,
    "mimeType"       TEXT NOT NULL,
    size             BIGINT NOT NULL,
    metadata         JSONB,
    "createdAt"      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT attachments_by_message UNIQUE ("messageId", position)
);
CREATE INDEX attachments_by_conversation ON attachments ("conversationId");
CREATE INDEX attachments_by_user ON attachments ("userId");
CREATE INDEX attachments_by_storage ON attachments ("storageId");

CREATE TABLE "toolCalls" (
    id               BIGSERIAL PRIMARY KEY,
    "messageId"      BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    "conversationId" BIGINT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    "userId"         BIGINT NOT NULL REFERENCES users(id),
    "toolCallId"     TEXT NOT NULL,
    "toolName"       TEXT NOT NULL,
    args             JSONB NOT NULL,
    result           JSONB,
    "textPosition"   INTEGER,
    "isPartial"      BOOLEAN NOT NULL,
    "timestamp"      BIGINT NOT NULL,
    "createdAt"      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT "toolCalls_by_message" UNIQUE ("messageId", "toolCallId")
);
CREATE INDEX "toolCalls_by_conversation" ON "toolCalls" ("conversationId");
CREATE INDEX "toolCalls_by_user" ON "toolCalls" ("userId");
CREATE INDEX "toolCalls_by_message_partial" ON "toolCalls" ("messageId", "isPartial");

// app/api/events/route.ts, after seed 000 (excerpt: event creation and bookmark handling).
import { prisma } from '@/lib/prisma';

export async function createEvent(body: any, dbUserId: string | null) {
  const { sessionId, eventType, chunkIds, metadata } = body;

  // Extract messageId from metadata if present (for expansion_followup, gap_submission, etc.)
  const eventMetadata = metadata || {};
  const messageId = eventMetadata?.messageId;

  // Remove messageId from metadata (simplified logic)
  const cleanMetadata = messageId && typeof eventMetadata === 'object'
    ? Object.fromEntries(Object.entries(eventMetadata).filter(([k]) => k !== 'messageId'))
    : eventMetadata;

  // Handle empty object case - convert {} to null for cleaner Prisma storage
  const finalMetadata = (cleanMetadata && typeof cleanMetadata === 'object' && Object.keys(cleanMetadata).length === 0)
    ? null
    : cleanMetadata;

  const event = await prisma.event.create({
    data: {
      messageId: messageId || null, // FK field (handles expansion_followup, gap_submission, etc.)
      sessionId: sessionId || null,
      userId: dbUserId,
      eventType,
      chunkIds: Array.isArray(chunkIds) ? chunkIds : [],
      metadata: finalMetadata, // Clean metadata without messageId
    },
  });

  // Use messageId from FK field (extracted above)
  if (eventType === 'bookmark' && messageId) {
    const message = await prisma.message.findUnique({
      where: { id: messageId }, // Use FK field
    });
    return { event, message };
  }
  return { event };
}

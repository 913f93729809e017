// app/api/events/route.ts, before seed 000 (excerpt: event creation and bookmark handling).
import { prisma } from '@/lib/prisma';

export async function createEvent(body: any, dbUserId: string | null) {
  const { sessionId, eventType, chunkIds, metadata } = body;

  const event = await prisma.event.create({
    data: {
      sessionId: sessionId || null,
      userId: dbUserId,
      eventType,
      chunkIds: Array.isArray(chunkIds) ? chunkIds : [],
      metadata: metadata || {},
    },
  });

  if (eventType === 'bookmark' && metadata.messageId) {
    const message = await prisma.message.findUnique({
      where: { id: metadata.messageId },
    });
    return { event, message };
  }
  return { event };
}

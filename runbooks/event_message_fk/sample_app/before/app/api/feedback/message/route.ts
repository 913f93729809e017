// app/api/feedback/message/route.ts, before seed 000 (excerpt: the five places Phase 3.1 changes).
import { prisma } from '@/lib/prisma';

export async function recordCopy(conversationId: string, dbUserId: string | null, messageId: string,
                                 chunkIds: string[], copyUsage?: string, copyContext?: string) {
  // Copy event duplicate check
  const allCopyEvents = await prisma.event.findMany({
    where: {
      eventType: 'copy',
      sessionId: conversationId,
      userId: dbUserId || undefined,
    },
  });
  const eventsForMessage = allCopyEvents.filter((evt) => {
    const metadata = evt.metadata as any;
    return metadata?.messageId === messageId;
  });
  const existingEvent = eventsForMessage[0];

  if (existingEvent) {
    // Copy event update
    await prisma.event.update({
      where: { id: existingEvent.id },
      data: {
        metadata: {
          messageId, // Was stored in metadata
          copyUsage,
          copyContext: copyContext || null,
        },
      },
    });
    return;
  }

  // Copy event creation
  await prisma.event.create({
    data: {
      sessionId: conversationId,
      userId: dbUserId || undefined,
      eventType: 'copy',
      chunkIds,
      metadata: {
        messageId,
        copyUsage: null,
        copyContext: null,
      },
    },
  });
}

export async function recordFeedback(conversationId: string, dbUserId: string | null, messageId: string,
                                     chunkIds: string[], feedbackType: string, needsMore: string[],
                                     specificSituation?: string) {
  // Feedback duplicate check
  const existingEvents = await prisma.event.findMany({
    where: {
      eventType: 'user_message',
      sessionId: conversationId,
      userId: dbUserId || undefined,
    },
  });
  const existingEvent = existingEvents.find((evt) => {
    const metadata = evt.metadata as any;
    return metadata?.messageId === messageId && metadata?.feedbackType === feedbackType;
  });
  if (existingEvent) return;

  // Feedback event creation
  await prisma.event.create({
    data: {
      sessionId: conversationId,
      userId: dbUserId || undefined,
      eventType: 'user_message',
      chunkIds,
      metadata: {
        messageId,
        feedbackType,
        needsMore: feedbackType === 'need_more' ? needsMore : [],
        specificSituation: feedbackType === 'need_more' ? specificSituation || null : null,
      },
    },
  });
}

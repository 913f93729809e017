// app/api/feedback/message/route.ts, after seed 000 (excerpt: the five places Phase 3.1 changed).
import { prisma } from '@/lib/prisma';

export async function recordCopy(conversationId: string, dbUserId: string | null, messageId: string,
                                 chunkIds: string[], copyUsage?: string, copyContext?: string) {
  // Copy events have a two-stage flow:
  // Stage 1: Initial copy (copyUsage=null) - created when user clicks copy button
  // Stage 2: Usage submission (copyUsage set) - updates existing record
  // We can now query directly by messageId FK (much faster!)
  const existingCopyEvent = await prisma.event.findFirst({
    where: {
      eventType: 'copy',
      messageId: messageId, // Direct FK query!
      userId: dbUserId || undefined,
    },
    orderBy: {
      timestamp: 'desc', // Get the most recent one first
    },
  });

  if (existingCopyEvent) {
    // messageId is already set in FK field (set during initial copy event creation)
    // We only need to update metadata with copyUsage and copyContext
    await prisma.event.update({
      where: { id: existingCopyEvent.id },
      data: {
        metadata: {
          copyUsage,
          copyContext: copyContext || null,
        },
      },
    });
    return;
  }

  await prisma.event.create({
    data: {
      messageId: messageId, // FK field
      sessionId: conversationId,
      userId: dbUserId || undefined,
      eventType: 'copy',
      chunkIds,
      metadata: {
        // Remove messageId from metadata
        copyUsage: null,
        copyContext: null,
      },
    },
  });
}

export async function recordFeedback(conversationId: string, dbUserId: string | null, messageId: string,
                                     chunkIds: string[], feedbackType: string, needsMore: string[],
                                     specificSituation?: string) {
  // Note: Prisma doesn't support JSON path queries, so we query by messageId FK
  // and filter feedbackType in JavaScript (still much faster than before)
  const eventsForMessage = await prisma.event.findMany({
    where: {
      eventType: 'user_message',
      messageId: messageId, // Direct FK query! (50x faster)
      userId: dbUserId || undefined,
    },
    select: {
      id: true,
      metadata: true,
    },
  });

  // Filter by feedbackType in memory (small dataset after FK filter)
  const existingEvent = eventsForMessage.find((evt) => {
    const metadata = evt.metadata as any;
    return metadata?.feedbackType === feedbackType;
  });
  if (existingEvent) return;

  await prisma.event.create({
    data: {
      messageId: messageId, // FK field
      sessionId: conversationId,
      userId: dbUserId || undefined,
      eventType: 'user_message',
      chunkIds,
      metadata: {
        // Remove messageId from metadata
        feedbackType,
        needsMore: feedbackType === 'need_more' ? needsMore : [],
        specificSituation: feedbackType === 'need_more' ? specificSituation || null : null,
      },
    },
  });
}

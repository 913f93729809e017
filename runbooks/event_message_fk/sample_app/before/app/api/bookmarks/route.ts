// app/api/bookmarks/route.ts, before seed 000 (excerpt: bookmark event creation).
import { prisma } from '@/lib/prisma';

export async function recordBookmarkEvent(message: any, user: any, messageId: string, chunkIds: unknown) {
  await prisma.event.create({
    data: {
      sessionId: message.conversationId,
      userId: user.id,
      eventType: 'bookmark',
      chunkIds: Array.isArray(chunkIds) ? chunkIds : [],
      metadata: {
        messageId,
      },
    },
  });
}

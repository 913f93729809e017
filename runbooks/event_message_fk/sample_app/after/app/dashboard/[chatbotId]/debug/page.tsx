// app/dashboard/[chatbotId]/debug/page.tsx, after seed 000 (excerpt: feedback counts).
import { prisma } from '@/lib/prisma';

export async function feedbackFor(conversationIds: string[], messageIds: string[]) {
  const feedbackForMessages = await prisma.event.findMany({
    where: {
      eventType: 'user_message',
      messageId: { in: messageIds }, // Direct FK query!
      sessionId: { in: conversationIds },
    },
    select: {
      id: true,
      messageId: true,
      metadata: true,
    },
  });
  return feedbackForMessages;
}

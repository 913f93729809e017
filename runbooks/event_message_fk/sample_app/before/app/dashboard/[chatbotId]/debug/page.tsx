// app/dashboard/[chatbotId]/debug/page.tsx, before seed 000 (excerpt: feedback counts).
import { prisma } from '@/lib/prisma';

export async function feedbackFor(conversationIds: string[], messageIds: string[]) {
  const allFeedbackEvents = await prisma.event.findMany({
    where: {
      eventType: 'user_message',
      sessionId: { in: conversationIds },
    },
    select: {
      id: true,
      metadata: true,
    },
  });

  // Filter events by messageId in metadata and count by feedbackType
  const feedbackForMessages = allFeedbackEvents.filter((evt) => {
    const metadata = evt.metadata as any;
    return metadata?.messageId && messageIds.includes(metadata.messageId);
  });
  return feedbackForMessages;
}

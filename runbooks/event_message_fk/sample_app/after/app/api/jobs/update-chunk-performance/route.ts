// Seed 000, Step 3.4 (AFTER): the job selects the messageId FK too ("for potential future use").
import { prisma } from '@/lib/prisma';

export async function POST() {
  const twentyFourHoursAgo = new Date(Date.now() - 24 * 60 * 60 * 1000);
  const recentEvents = await prisma.event.findMany({
    where: {
      timestamp: {
        gte: twentyFourHoursAgo,
      },
    },
    select: {
      id: true,
      eventType: true,
      messageId: true, // ADD: Include messageId
      chunkIds: true,
      metadata: true,
      sessionId: true,
    },
  });
  return Response.json({ processed: recentEvents.length });
}

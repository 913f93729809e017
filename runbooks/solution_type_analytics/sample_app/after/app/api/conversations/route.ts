// Seed 004, "Data Flow" steps 5 to 7: the conversation keeps its solution type, and the backend
// records a conversation_created analytics event for it.
import { prisma } from '@/lib/prisma';

export async function POST(request: Request) {
  const { title, model, solutionType } = await request.json();
  const conversation = await prisma.conversation.create({
    data: { title, model, solutionType: solutionType ?? null },
  });
  await prisma.analyticsEvent.create({
    data: {
      eventType: 'conversation_created',
      solutionType: solutionType ?? null,
      conversationId: conversation.id,
      model,
    },
  });
  return Response.json(conversation);
}

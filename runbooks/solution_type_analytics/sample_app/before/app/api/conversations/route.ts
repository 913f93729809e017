// Seed 004, before: a conversation is created without its solution, and nothing is tracked.
import { prisma } from '@/lib/prisma';

export async function POST(request: Request) {
  const { title, model } = await request.json();
  const conversation = await prisma.conversation.create({
    data: { title, model },
  });
  return Response.json(conversation);
}

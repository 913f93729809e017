// Seed 003, "After Batch 5 (Safe)": the database enforces one open conversation per lead; the
// instance that loses the race gets P2002 and fetches the winner's conversation.
import { prisma } from '@/lib/prisma';

export async function currentConversation(leadId: string) {
  try {
    return await prisma.conversation.create({
      data: { leadId, closedAt: null },
    });
  } catch (error: any) {
    if (error.code === 'P2002') {
      // Another instance created it, fetch instead
      return prisma.conversation.findFirstOrThrow({
        where: { leadId, closedAt: null },
      });
    }
    throw error;
  }
}

export async function closeConversation(id: string) {
  return prisma.conversation.update({
    where: { id },
    data: { closedAt: new Date() },
  });
}

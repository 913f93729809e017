// Seed 003, "Before Batch 5 (Risky)": check, then create. Two instances can both reach create.
import { prisma } from '@/lib/prisma';

export async function currentConversation(leadId: string) {
  // PROBLEM: Race condition possible
  const existing = await prisma.conversation.findFirst({
    where: { leadId },
  });

  if (!existing) {
    // Two instances might both reach here!
    return prisma.conversation.create({ data: { leadId } });
  }
  return existing;
}

-- Migration 014, as seed 001 quotes it: the Customer table ("-- ..." filled with timestamps).
CREATE TABLE IF NOT EXISTS "Customer" (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  code VARCHAR(50) NOT NULL UNIQUE,
  name VARCHAR(255) NOT NULL UNIQUE,
  "createdAt" TIMESTAMPTZ DEFAULT NOW()
);

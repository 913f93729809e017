-- Migration 008, as seed 001 quotes it ("-- ... other columns ..." filled with the columns the
-- corrected migration 022 relies on: "isActive", timestamps).
CREATE TABLE IF NOT EXISTS "SavedInsights" (
  id SERIAL PRIMARY KEY,
  name VARCHAR(255) NOT NULL,
  question TEXT NOT NULL,
  scope VARCHAR(10) NOT NULL CHECK (scope IN ('form','schema')),
  "formId" UUID NULL,
  sql TEXT NOT NULL,
  "chartType" VARCHAR(20) NOT NULL,
  "chartMapping" JSONB NOT NULL,
  "isActive" BOOLEAN NOT NULL DEFAULT true,
  "createdAt" TIMESTAMPTZ DEFAULT NOW(),
  "updatedAt" TIMESTAMPTZ DEFAULT NOW()
);

-- Migration 012: the Users table. Seed 001's review had to check it: "Need to verify Users
-- table has INTEGER id (from migration 012)". It does.
CREATE TABLE IF NOT EXISTS "Users" (
  id SERIAL PRIMARY KEY,
  email VARCHAR(255) NOT NULL UNIQUE,
  name VARCHAR(255),
  "createdAt" TIMESTAMPTZ DEFAULT NOW()
);

-- Stand-in for the project's migration 000 (seed 001 lists 000-021 but shows only 008, 012 and
-- 014; the others are small stand-ins so that the folder is a real, appliable history).
CREATE TABLE IF NOT EXISTS "Form" (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  name VARCHAR(255) NOT NULL,
  "createdAt" TIMESTAMPTZ DEFAULT NOW()
);

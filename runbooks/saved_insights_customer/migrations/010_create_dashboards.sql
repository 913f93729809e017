-- Stand-in (see 000).
CREATE TABLE IF NOT EXISTS "Dashboard" (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  name VARCHAR(255) NOT NULL,
  layout JSONB NOT NULL DEFAULT '[]'
);

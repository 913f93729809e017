-- Stand-in (see 000).
ALTER TABLE "SavedInsights" ADD COLUMN IF NOT EXISTS tags TEXT[] NOT NULL DEFAULT '{}';

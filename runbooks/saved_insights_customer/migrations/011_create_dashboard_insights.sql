-- Stand-in (see 000).
CREATE TABLE IF NOT EXISTS "DashboardInsight" (
  "dashboardId" UUID NOT NULL REFERENCES "Dashboard"(id) ON DELETE CASCADE,
  "insightId" INTEGER NOT NULL REFERENCES "SavedInsights"(id) ON DELETE CASCADE,
  position INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY ("dashboardId", "insightId")
);
CREATE INDEX IF NOT EXISTS idx_dashboard_insight_insight ON "DashboardInsight" ("insightId");

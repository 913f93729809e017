-- Migration 021, the latest before seed 001's review ("Latest: 021_context_discovery_audit.sql").
CREATE TABLE IF NOT EXISTS "ContextDiscoveryAudit" (
  id BIGSERIAL PRIMARY KEY,
  "runId" UUID NOT NULL REFERENCES "ContextDiscoveryRun"(id) ON DELETE CASCADE,
  step VARCHAR(50) NOT NULL,
  detail JSONB NOT NULL DEFAULT '{}',
  "createdAt" TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_context_discovery_audit_run ON "ContextDiscoveryAudit" ("runId");

"""The live catalog: schema snapshots and fingerprints, expectations, preflight."""

"""What a target's ledger holds: runbook state, events, checkpoints, approvals, seals."""
